"""The Kubernetes resources, checked offline: rendered from their values files exactly as
committed in deploy/kubernetes/, valid against Kubernetes' own schemas (kubernetes-validate,
which ships them), the operators' custom resources holding the fields their documentation
requires (tests/k8s_crds.py), and the whole consistent: each Deployment probed on the service's
health, with requests, a Service and a disruption budget; every variable one its service reads;
every Secret one an operator makes or the guide has one create; KEDA scaling on the consumer
groups the services really read in, never past their topics' partitions."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conveyor_cli.commands.kube import KUSTOMIZATION, manifest
from conveyor_cli.kubernetes import PORTS, STREAM_SERVICES, Values, ValuesError, load, render
from conveyor_cli.kubernetes.render import consumed, max_replicas
from conveyor_cli.kubernetes.values import CONSOLE_PORT
from conveyor_cli.main import run
from conveyor_contracts import CATALOG, CONSOLE, by_name
from tests.k8s_crds import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
PROFILES = ("operators", "external")
# The oldest Kubernetes the resources are checked against (each API they use is GA there) and
# the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
GUIDE = (ROOT / "docs" / "kubernetes.md").read_text()


def _values(profile: str) -> Path:
    return DEPLOY / f"values-{profile}.yaml"


VARIANTS: dict[str, dict[str, Any]] = {
    "oauthbearer-external": {
        "kafka": {
            "provider": "external",
            "bootstrap_servers": "kafka.example.com:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "oauth_token_url": "https://login.example.com/oauth2/token",
            "oauth_scope": "kafka",
            "ca": {"name": "kafka-ca", "key": "ca.pem"},
        },
        "postgres": {"provider": "external"},
    },
    "plaintext-fixed-replicas": {
        "kafka": {
            "provider": "external",
            "bootstrap_servers": "kafka:9092",
            "security_protocol": "PLAINTEXT",
            "sasl_mechanism": None,
            "credentials_secret": None,
        },
        "services": {
            name: {"replicas": 1, "autoscaling": {"enabled": False}} for name in STREAM_SERVICES
        },
        "image": {"pull_secrets": ["registry-login"]},
        "otel_endpoint": "http://otel-collector.observability:4318",
    },
}


def _all_renders() -> dict[str, list[dict[str, Any]]]:
    renders = {p: render(load(_values(p))) for p in PROFILES}
    renders |= {name: render(Values.model_validate(v)) for name, v in VARIANTS.items()}
    return renders


RENDERS = _all_renders()
DOCUMENTS = [(name, doc) for name, docs in RENDERS.items() for doc in docs]


def _id(item: tuple[str, dict[str, Any]]) -> str:
    name, doc = item
    return f"{name}:{doc['kind']}:{doc['metadata']['name']}"


@pytest.mark.parametrize("profile", PROFILES)
def test_the_committed_manifests_are_what_their_values_render(profile):
    shown = f"deploy/kubernetes/values-{profile}.yaml"
    committed = (DEPLOY / profile / "conveyor.yaml").read_text()
    assert committed == manifest(_values(profile), shown), "run `make manifests`"
    assert (DEPLOY / profile / "kustomization.yaml").read_text() == KUSTOMIZATION
    assert list(yaml.safe_load_all(committed)) == RENDERS[profile]


@pytest.mark.parametrize("item", DOCUMENTS, ids=[_id(d) for d in DOCUMENTS])
def test_every_resource_is_valid_for_kubernetes_or_its_operator(item):
    _, doc = item
    schema = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
        assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"Kubernetes {version}: {'/'.join(map(str, exc.path))}: {exc.message}")


COMPONENTS = PORTS | {CONSOLE: CONSOLE_PORT}  # the services, and the console beside them


def _kinds(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_only_known_kinds_are_rendered_and_the_custom_ones_are_all_checked():
    kinds = {(d["apiVersion"], d["kind"]) for _, d in DOCUMENTS}
    custom = {k for k in kinds if "." in k[0].split("/")[0]}
    assert custom == set(SCHEMAS)


@pytest.mark.parametrize("name", RENDERS)
def test_each_service_runs_probed_on_its_own_health_with_requests_and_a_budget(name):
    docs = RENDERS[name]
    deployments = _kinds(docs, "Deployment")
    services = _kinds(docs, "Service")
    budgets = _kinds(docs, "PodDisruptionBudget")
    assert sorted(deployments) == sorted(f"conveyor-{s}" for s in COMPONENTS)
    for service, port in COMPONENTS.items():
        deployment = deployments[f"conveyor-{service}"]
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert services[f"conveyor-{service}"]["spec"]["selector"] == selector
        assert services[f"conveyor-{service}"]["spec"]["ports"][0]["port"] == port
        assert budgets[f"conveyor-{service}"]["spec"]["selector"]["matchLabels"] == selector


def _settings_variables(service: str) -> set[str]:
    settings = import_module(f"conveyor_{service}.bootstrap")
    (cls,) = [
        v
        for k, v in vars(settings).items()
        if k.endswith("Settings") and k != "ServiceSettings" and isinstance(v, type)
    ]
    return {field.upper() for field in cls.model_fields}


@pytest.mark.parametrize("name", RENDERS)
def test_every_variable_is_one_its_service_reads(name):
    for service in COMPONENTS:
        deployment = _kinds(RENDERS[name], "Deployment")[f"conveyor-{service}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container["env"]}
        known = _settings_variables(service) | {
            "OTEL_SERVICE_NAME",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "LOG_LEVEL",
        }
        assert names <= known, names - known
        assert len(names) == len(container["env"]), "a variable set twice"
        if service not in ("serving", CONSOLE):
            assert "DATABASE_URL" in names


@pytest.mark.parametrize("name", RENDERS)
def test_the_console_runs_once_without_kafka_or_a_database_and_calls_the_services(name):
    docs = RENDERS[name]
    deployment = _kinds(docs, "Deployment")["conveyor-console"]
    assert deployment["spec"]["replicas"] == 1  # its sessions are in memory
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert not {n for n in env if n.startswith("KAFKA_")} and "DATABASE_URL" not in env
    assert env["REGISTRY_URL"] == f"http://conveyor-registry:{PORTS['registry']}"
    assert env["MONITOR_URL"] == f"http://conveyor-monitor:{PORTS['monitor']}"
    assert "conveyor-console" not in _kinds(docs, "KafkaUser")
    assert "conveyor-console" not in _kinds(docs, "ScaledObject")
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/conveyor/kafka-ca" not in mounted


def test_the_console_can_be_left_out_and_given_its_identity_provider():
    values = Values.model_validate(
        {"console": {"env": {"CONVEYOR_OIDC_ISSUER": "https://sso.example.com/realms/ml"}}}
    )
    deployment = _kinds(render(values), "Deployment")["conveyor-console"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "CONVEYOR_OIDC_ISSUER", "value": "https://sso.example.com/realms/ml"} in (
        container["env"]
    )
    without = render(Values.model_validate({"console": {"enabled": False}}))
    assert "conveyor-console" not in _kinds(without, "Deployment")


def _secrets_referenced(docs: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for deployment in _kinds(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "secret" in volume:
                found.add(volume["secret"]["secretName"])
        for env in pod["containers"][0]["env"]:
            if "valueFrom" in env:
                found.add(env["valueFrom"]["secretKeyRef"]["name"])
    for auth in _kinds(docs, "TriggerAuthentication").values():
        found |= {ref["name"] for ref in auth["spec"].get("secretTargetRef", [])}
    return found


@pytest.mark.parametrize("name", RENDERS)
def test_every_secret_is_made_by_an_operator_or_by_the_guide(name):
    docs = RENDERS[name]
    by_operators = set(_kinds(docs, "KafkaUser"))  # Strimzi names a user's Secret after it
    by_operators |= {f"{k}-cluster-ca-cert" for k in _kinds(docs, "Kafka")}
    by_operators |= {f"{c}-app" for c in _kinds(docs, "Cluster")}
    by_hand = _secrets_referenced(docs) - by_operators
    assert by_hand <= {
        "conveyor-tokens",
        "conveyor-service-tokens",
        "conveyor-kafka",
        "conveyor-database",
        "kafka-ca",
    }
    for secret in by_hand - {"kafka-ca"}:  # the variant's own CA secret is not the guide's
        assert f"secret generic {secret}" in GUIDE, f"the guide does not make {secret}"


@pytest.mark.parametrize("name", RENDERS)
def test_keda_scales_on_the_groups_the_services_read_in_never_past_the_partitions(name):
    docs = RENDERS[name]
    scaled = _kinds(docs, "ScaledObject")
    autoscaled = (
        {
            s
            for s in STREAM_SERVICES
            if Values.model_validate(VARIANTS.get(name, {})).services[s].autoscaling.enabled
        }
        if name in VARIANTS
        else set(STREAM_SERVICES)
    )
    assert sorted(scaled) == sorted(f"conveyor-{s}" for s in autoscaled)
    for service in autoscaled:
        spec = scaled[f"conveyor-{service}"]["spec"]
        assert spec["scaleTargetRef"]["name"] in _kinds(docs, "Deployment")
        assert "replicas" not in _kinds(docs, "Deployment")[f"conveyor-{service}"]["spec"]
        groups = import_module(f"conveyor_{service}.bootstrap").bootstrap().bus.groups()
        triggers = {t["metadata"]["topic"]: t["metadata"] for t in spec["triggers"]}
        assert {topic: m["consumerGroup"] for topic, m in triggers.items()} == groups
        partitions = min(by_name(topic).partitions for topic in triggers)
        assert spec["maxReplicaCount"] <= partitions
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            if "authenticationRef" in trigger:
                assert trigger["authenticationRef"]["name"] in _kinds(docs, "TriggerAuthentication")


def test_strimzi_owns_every_topic_and_the_services_create_none():
    docs = RENDERS["operators"]
    topics = {t["spec"]["topicName"] for t in _kinds(docs, "KafkaTopic").values()}
    assert topics == {n for s in CATALOG for n in (s.name, s.dlq)}
    for service in PORTS:  # the console has no Kafka client (its own test)
        deployment = _kinds(docs, "Deployment")[f"conveyor-{service}"]
        env = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["KAFKA_CREATE_TOPICS"] == "false"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["KAFKA_SASL_USERNAME"] in _kinds(docs, "KafkaUser")


def test_each_service_user_may_read_in_its_own_groups_only():
    users = _kinds(RENDERS["operators"], "KafkaUser")
    for service in PORTS:
        groups = [
            a["resource"]
            for a in users[f"conveyor-{service}"]["spec"]["authorization"]["acls"]
            if a["resource"]["type"] == "group"
        ]
        assert groups == [
            {"type": "group", "name": f"conveyor-{service}.", "patternType": "prefix"}
        ]
        for topic in consumed(service):
            assert any(
                a["resource"]["name"] == topic.name and "Read" in a["operations"]
                for a in users[f"conveyor-{service}"]["spec"]["authorization"]["acls"]
            )


def test_autoscaling_past_the_partitions_is_refused():
    values = Values.model_validate(
        {"services": {"serving": {"autoscaling": {"max_replicas": max_replicas("serving") + 1}}}}
    )
    with pytest.raises(ValueError, match="above the 3 partitions of the topics serving reads"):
        render(values)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"kafka": {"provider": "external"}}, "kafka.bootstrap_servers is required"),
        ({"kafka": {"colour": "blue"}}, "kafka.colour: Extra inputs are not permitted"),
        ({"services": {"trainer": {"autoscaling": {"enabled": True}}}}, "only the stream services"),
        ({"services": {"billing": {}}}, "unknown services billing"),
    ],
)
def test_values_that_cannot_work_are_refused_naming_the_key(tmp_path, values, said):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValuesError, match=said):
        load(path)


def test_the_command_writes_a_kustomize_base(tmp_path, capsys):
    assert (
        run(["kube", "render", "--values", str(_values("external")), "--out", str(tmp_path)]) == 0
    )
    assert (tmp_path / "kustomization.yaml").read_text() == KUSTOMIZATION
    assert list(yaml.safe_load_all((tmp_path / "conveyor.yaml").read_text())) == RENDERS["external"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: {provider: external}\n")
    assert run(["kube", "render", "--values", str(bad)]) == 2
    assert "kafka.bootstrap_servers is required" in capsys.readouterr().err
    assert run(["kube", "values"]) == 0
    assert Values.model_validate(yaml.safe_load(capsys.readouterr().out)) == Values()
    assert run(["kube", "render", "--values", str(_values("operators")), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List" and listed["items"] == RENDERS["operators"]
