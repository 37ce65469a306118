"""Match: one way to say which requests a route, a scheduled fault or an assertion is about."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowgraph.testing._match import Match

SEGMENT = st.text(string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=12).filter(
    lambda segment: segment not in (".", "..")  # URLs resolve these away
)
NAMES = st.text(string.ascii_lowercase, min_size=1, max_size=8)
VALUES = st.text(string.ascii_letters + string.digits, max_size=8)


def get(url: str, **options: Any) -> httpx.Request:
    return httpx.Request(options.pop("method", "GET"), url, **options)


@given(user=SEGMENT, number=st.integers(0, 10**9), rest=st.lists(SEGMENT, min_size=1, max_size=4))
def test_path_parameters_come_back_converted(user: str, number: int, rest: list[str]) -> None:
    """{name} takes one segment as a str, {name:int} an int, {name:path} the rest with slashes."""
    match = Match("GET", "/users/{user}/orders/{number:int}/files/{rest:path}")
    url = f"http://api.test/users/{user}/orders/{number}/files/{'/'.join(rest)}"
    assert match.params(get(url)) == {"user": user, "number": number, "rest": "/".join(rest)}
    assert match.params(get(f"http://api.test/users/{user}/orders/x/files/a")) is None
    assert match.params(get(f"http://api.test/users/{user}/{user}/orders/1/files/a")) is None


@given(
    query=st.dictionaries(NAMES, VALUES, max_size=5),
    extra=st.dictionaries(NAMES, VALUES, max_size=3),
    data=st.data(),
)
def test_a_query_condition_is_a_subset_of_the_url_query(
    query: dict[str, str], extra: dict[str, str], data: st.DataObject
) -> None:
    """The URL may carry more parameters than the condition; each one named must be equal."""
    sent = {**extra, **query}
    request = get("http://api.test/items", params=sent)
    assert Match(query=query).matches(request)
    if query:
        name = data.draw(st.sampled_from(sorted(query)))
        assert not Match(query={**query, name: query[name] + "!"}).matches(request)
        assert not Match(query={name: None}).matches(request)
    absent = data.draw(NAMES.filter(lambda name: name not in sent))
    assert Match(query={absent: None}).matches(request)
    assert not Match(query={absent: "1"}).matches(request)


@given(
    headers=st.dictionaries(NAMES.map(lambda n: f"x-{n}"), VALUES, min_size=1, max_size=4),
    data=st.data(),
)
def test_header_names_match_in_any_case(headers: dict[str, str], data: st.DataObject) -> None:
    """Header conditions ignore the case of names, never of values."""
    request = get("http://api.test/", headers=headers)
    shouted = {
        "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in name): value
        for name, value in headers.items()
    }
    assert Match(headers=shouted).matches(request)
    name, value = next(iter(headers.items()))
    assert not Match(headers={name: value + "X"}).matches(request)
    assert Match(headers={"x-absent-header": None}).matches(request)


@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | VALUES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
        max_leaves=8,
    )
)
def test_json_conditions_compare_parsed_bodies(body: Any) -> None:
    """json= equals the parsed body whatever its spacing; content= compares bytes exactly."""
    compact = get("http://api.test/", method="POST", content=json.dumps(body))
    spaced = get("http://api.test/", method="POST", content=json.dumps(body, indent=2))
    assert Match(json=body).matches(compact)
    assert Match(json=body).matches(spaced)
    assert Match(json=[body]).matches(compact) is False
    assert Match(content=compact.content).matches(compact)


def test_methods_globs_and_regexes() -> None:
    """Methods compare in any case; * and ? glob, a regex's named groups become parameters."""
    post = get("http://api.test/items/7?x=1", method="post")
    assert Match("POST", "/items/*").matches(post)
    assert not Match("GET", "/items/*").matches(post)
    assert Match(None, "/items/?").matches(post)
    assert Match(path=re.compile(r"/items/(?P<n>\d+)")).params(post) == {"n": "7"}
    assert not Match(json={"a": 1}).matches(post)  # no body is not JSON
    assert Match(path="/caf\u00e9").matches(get("http://api.test/caf%C3%A9"))


def test_describe_and_repr() -> None:
    """The description reads like the request; the repr lists every condition."""
    match = Match(
        "post", "/orders/{id:int}", query={"dry": True}, headers={"X-Key": "k"}, json={"a": 1}
    )
    assert match.describe() == (
        "POST /orders/{id:int} query={'dry': 'true'} headers={'x-key': 'k'} json={'a': 1}"
    )
    assert repr(match) == (
        "Match('POST', '/orders/{id:int}', query={'dry': 'true'}, headers={'x-key': 'k'}, "
        "json={'a': 1})"
    )
    assert Match(path=re.compile("/x")).describe() == "any method re.compile('/x')"
    assert Match("GET", "/a") == Match("get", "/a")
    assert hash(Match("GET", "/a")) == hash(Match("get", "/a"))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: Match("GET /x"),
            ValueError,
            "method must be an HTTP method such as 'GET' (got 'GET /x')",
        ),
        (
            lambda: Match(path=7),  # type: ignore[arg-type]
            TypeError,
            "a path pattern must be a string or re.Pattern (got 7)",
        ),
        (
            lambda: Match(path="/a/{id:uuid}"),
            ValueError,
            "unknown converter 'uuid' in path pattern '/a/{id:uuid}'; expected one of: str, int, path",
        ),
        (lambda: Match(path="/{a}/{a}"), ValueError, "path pattern '/{a}/{a}' names 'a' twice"),
        (
            lambda: Match(json={}, content=b""),
            ValueError,
            "match the body with json= or content=, not both",
        ),
        (
            lambda: Match(query=["a"]),  # type: ignore[arg-type]
            TypeError,
            "query must be a mapping of names to values (got ['a'])",
        ),
    ],
    ids=["method", "path-type", "converter", "twice", "body", "query-type"],
)
def test_invalid_conditions_are_refused_at_once(
    build: Any, error: type[Exception], message: str
) -> None:
    """A bad condition raises when it is written, saying what is allowed."""
    with pytest.raises(error, match=rf"^{re.escape(message)}$"):
        build()
