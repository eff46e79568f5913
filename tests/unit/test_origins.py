"""A project's feedback origins: each as browsers send it, or refused with the right form."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from conveyor_contracts import ModelProject
from conveyor_contracts.project import MAX_ORIGINS, origin_problem
from conveyor_examples import load_project


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
        "https://xn--bcher-kva.de",
    ],
)
def test_origins_as_browsers_send_them(origin):
    assert origin_problem(origin) is None


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("*", "is a wildcard"),
        ("null", "is not scheme://host[:port]"),
        ("app.example.com", "is not scheme://host[:port]"),
        ("ftp://app.example.com", "is not scheme://host[:port]"),
        ("https://app.example.com/shop", "is not scheme://host[:port]"),
        ("https://app.example.com?x=1", "is not scheme://host[:port]"),
        ("https://user@app.example.com", "is not scheme://host[:port]"),
        ("https://app.example.com:99999", "has an invalid port"),
        ("https://app.example.com/", "as browsers send it: 'https://app.example.com'"),
        ("HTTPS://App.Example.com", "as browsers send it: 'https://app.example.com'"),
        ("https://app.example.com:443", "as browsers send it: 'https://app.example.com'"),
        ("http://app.example.com:80", "as browsers send it: 'http://app.example.com'"),
        ("https://bücher.de", "as browsers send it: 'https://xn--bcher-kva.de'"),
        ("https://a b.com", "whitespace"),
        ("https://" + "a" * 300 + ".com", "longer than 300"),
    ],
)
def test_other_origins_are_refused_with_what_is_wrong(origin, problem):
    assert problem in (origin_problem(origin) or "")


def _with(origins: list[str]) -> ModelProject:
    spec = load_project("fraud").model_dump(mode="json")
    return ModelProject.model_validate(spec | {"feedback": {"allowed_origins": origins}})


def test_a_project_lists_its_origins_bounded_and_once_each():
    assert load_project("fraud").feedback.allowed_origins == []  # no page unless listed
    assert _with(["https://app.example.com"]).feedback.allowed_origins == [
        "https://app.example.com"
    ]
    with pytest.raises(ValidationError, match=re.escape("origin 'https://app.example.com/' is")):
        _with(["https://app.example.com/"])
    with pytest.raises(ValidationError, match="listed once each"):
        _with(["https://a.example.com", "https://a.example.com"])
    with pytest.raises(ValidationError, match=f"at most {MAX_ORIGINS} items"):
        _with([f"https://p{i}.example.com" for i in range(MAX_ORIGINS + 1)])
