"""Is a new JSON Schema of a subject backward compatible with the previous one?

Backward compatible means a consumer on the NEW schema reads every message written with the OLD
one. Events ignore unknown fields, so removing a field or adding an optional one is fine; adding
a required field, narrowing a type, dropping an enum value or a union variant, or tightening a
bound is not. This covers the subset of JSON Schema that pydantic generates.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = root.get("$defs", {})[name]
    return schema


def _variants(schema: Schema, root: Schema) -> list[Schema]:
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            out: list[Schema] = []
            for s in schema[key]:
                out.extend(_variants(s, root))
            return out
    return [schema]


def _types(schema: Schema) -> set[str]:
    t = schema.get("type")
    if t is None:
        return {"object"} if "properties" in schema else {"any"}
    types = set(t if isinstance(t, list) else [t])
    if "number" in types:
        types.add("integer")  # a number schema accepts integers
    return types


def _allowed(schema: Schema) -> set[Any] | None:
    """The values an enum or a constant admits (None: no such restriction)."""
    if "enum" in schema:
        return set(schema["enum"])
    if "const" in schema:
        return {schema["const"]}
    return None


def _key(schema: Schema) -> str | None:
    """A discriminator value (any property fixed to one constant, such as `type` or `kind`),
    for matching union variants."""
    for name, prop in sorted(schema.get("properties", {}).items()):
        if "const" in prop:
            return f"{name}={prop['const']}"
    return None


def _accepts(
    new: Schema, old: Schema, new_root: Schema, old_root: Schema, path: str, problems: list[str]
) -> None:
    """Add to `problems` every way `new` rejects a value `old` accepted."""
    new_vs, old_vs = _variants(new, new_root), _variants(old, old_root)
    if len(old_vs) > 1 or len(new_vs) > 1:
        for ov in old_vs:
            if _key(ov) is not None:  # a tagged variant needs its tag in the new union
                match = [nv for nv in new_vs if _key(nv) == _key(ov)]
            else:
                match = [nv for nv in new_vs if _types(ov) <= _types(nv) or "any" in _types(nv)]
            if not match:
                problems.append(f"{path}: union variant {_key(ov) or _types(ov)} was removed")
                continue
            _accepts_one(match[0], ov, new_root, old_root, path, problems)
        return
    _accepts_one(new_vs[0], old_vs[0], new_root, old_root, path, problems)


def _accepts_one(
    new: Schema, old: Schema, new_root: Schema, old_root: Schema, path: str, problems: list[str]
) -> None:
    new_t, old_t = _types(new), _types(old)
    if "any" not in new_t and not (old_t - {"any"}) <= new_t:
        problems.append(f"{path}: type narrowed from {sorted(old_t)} to {sorted(new_t)}")
        return
    new_values, old_values = _allowed(new), _allowed(old)
    if new_values is not None:
        if old_values is None:
            problems.append(f"{path}: values now restricted to {sorted(new_values, key=str)}")
        elif not old_values <= new_values:
            removed = sorted(old_values - new_values, key=str)
            problems.append(f"{path}: enum values removed: {removed}")
    for bound in _LOWER:
        if bound in new and new[bound] > old.get(bound, float("-inf")):
            problems.append(f"{path}: {bound} tightened to {new[bound]}")
    for bound in _UPPER:
        if bound in new and new[bound] < old.get(bound, float("inf")):
            problems.append(f"{path}: {bound} tightened to {new[bound]}")
    if "pattern" in new and new["pattern"] != old.get("pattern"):
        problems.append(f"{path}: pattern changed to {new['pattern']!r}")
    if "object" in new_t and ("properties" in new or "properties" in old):
        new_props, old_props = new.get("properties", {}), old.get("properties", {})
        old_required = set(old.get("required", []))
        for name in new.get("required", []):
            if name not in old_required:
                problems.append(f"{path}.{name}: a new required field")
        for name, schema in new_props.items():
            if name in old_props:
                _accepts(schema, old_props[name], new_root, old_root, f"{path}.{name}", problems)
    if "array" in new_t and "items" in new and "items" in old:
        _accepts(new["items"], old["items"], new_root, old_root, f"{path}[]", problems)
    if isinstance(new.get("additionalProperties"), dict) and isinstance(
        old.get("additionalProperties"), dict
    ):
        _accepts(
            new["additionalProperties"],
            old["additionalProperties"],
            new_root,
            old_root,
            f"{path}{{}}",
            problems,
        )


def backward_problems(old: Schema, new: Schema) -> list[str]:
    """Every way a consumer on `new` would fail to read a message valid under `old`."""
    problems: list[str] = []
    _accepts(new, old, new, old, "$", problems)
    return problems
