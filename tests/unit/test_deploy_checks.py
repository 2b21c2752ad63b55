"""What counts as a model or mode change on an existing index (issue 12, defect 4), and unit-length checks."""

from __future__ import annotations

from dataclasses import replace

from e5plugin.deploy import embedding_changes
from e5plugin.models import ModelSpec
from e5plugin.packaging.eland_import import is_unit_length
from e5plugin.prefixes import Mode, plan_prefixes
from e5plugin.search import IndexSetup

SPEC = ModelSpec("intfloat/e5-small-v2", 384, "bert", query_prefix="query: ", passage_prefix="passage: ")


def _setup(spec: ModelSpec = SPEC, mode: Mode = Mode.CLIENT, model_id: str | None = None) -> IndexSetup:
    return IndexSetup(spec, mode, plan_prefixes(spec, mode, True), "text", "embedding", model_id=model_id)


def test_the_same_model_redeployed_under_a_new_cluster_id_is_no_change():
    old = _setup(mode=Mode.SERVER, model_id="abc").to_meta()
    assert embedding_changes(old, _setup(mode=Mode.SERVER, model_id="def")) == []


def test_model_prefix_and_mode_changes_are_named():
    old = _setup().to_meta()
    minilm = ModelSpec("sentence-transformers/all-MiniLM-L6-v2", 384, "bert")
    assert embedding_changes(old, _setup(minilm)) == [
        "the model (intfloat/e5-small-v2 to sentence-transformers/all-MiniLM-L6-v2)"
    ]
    assert embedding_changes(old, _setup(replace(SPEC, passage_prefix=""))) == [
        "the model's passage prefix ('passage: ' to '')"
    ]
    assert embedding_changes(old, _setup(mode=Mode.SERVER)) == ["the mode (client to server)"]
    assert embedding_changes({}, _setup()) == ["the model (the index was not made by e5plugin)"]


def test_weights_hash_decides_for_local_directories():
    a = replace(SPEC, model_id="./models/e5", weights_sha256="1" * 64)
    moved = replace(a, model_id="/srv/models/e5")  # the same weights under another path: no change
    assert embedding_changes(_setup(a).to_meta(), _setup(moved)) == []
    retrained = replace(a, weights_sha256="2" * 64)
    assert embedding_changes(_setup(a).to_meta(), _setup(retrained))


def test_unit_length():
    assert is_unit_length([0.6, 0.8]) and is_unit_length([[1.0, 0.0], [0.0, 1.0]])
    assert not is_unit_length([1.0, 1.0]) and not is_unit_length([])
