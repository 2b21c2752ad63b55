"""Field names enter painless scripts and mappings: only safe dotted names get past deploy and ``_meta``."""

from __future__ import annotations

import pytest

from e5plugin.bodies import validate_field_name
from e5plugin.errors import ConfigurationError
from e5plugin.models import ModelSpec
from e5plugin.prefixes import Mode, plan_prefixes
from e5plugin.search import IndexSetup

GOOD = ["embedding", "text", "doc.vec", "passages.embedding", "_vec", "vec-1", "Body_Text2", "@timestamp", "a" * 255]
BAD = [
    "",
    "embedding') + 1000; //",
    "emb'edding",
    'emb"edding',
    "a\\b",
    "a b",
    "a\nb",
    ".vec",
    "vec.",
    "doc..vec",
    "vec*",
    "a/b",
    "-vec",
    "a" * 256,
]


@pytest.mark.parametrize("name", GOOD)
def test_safe_field_names_pass(name: str) -> None:
    assert validate_field_name("vector", name) == name


@pytest.mark.parametrize("name", [*BAD, None, 3, ["embedding"]])
def test_unsafe_field_names_are_refused_with_the_name(name: object) -> None:
    with pytest.raises(ConfigurationError, match="vector field"):
        validate_field_name("vector", name)  # type: ignore[arg-type]


SPEC = ModelSpec(
    model_id="intfloat/e5-small-v2", dims=384, model_type="bert", query_prefix="query: ", passage_prefix="passage: "
)


def _meta(**fields: object) -> dict:
    setup = IndexSetup(SPEC, Mode.CLIENT, plan_prefixes(SPEC, Mode.CLIENT, False), "text", "embedding")
    return {**setup.to_meta(), **fields}


def test_a_malicious_meta_is_refused_when_read() -> None:
    assert IndexSetup.from_meta(_meta()).vector_field == "embedding"
    with pytest.raises(ConfigurationError, match="vector field"):
        IndexSetup.from_meta(_meta(vector_field="embedding') * 0 + 1000; //"))
    with pytest.raises(ConfigurationError, match="text field"):
        IndexSetup.from_meta(_meta(text_field="text'] + 1; //"))


def test_a_setup_cannot_be_built_with_an_unsafe_field() -> None:
    """deploy builds the IndexSetup before its first request: the check there refuses before anything is sent."""
    with pytest.raises(ConfigurationError, match="vector field"):
        IndexSetup(SPEC, Mode.CLIENT, plan_prefixes(SPEC, Mode.CLIENT, False), "text", "v'ec")
