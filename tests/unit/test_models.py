from __future__ import annotations

import json

import pytest

from e5plugin.errors import UnknownModelError
from e5plugin.models import KNOWN_MODELS, inspect_directory, resolve_model


def test_known_table_facts():
    assert KNOWN_MODELS["intfloat/e5-small-v2"].dims == 384
    assert KNOWN_MODELS["intfloat/e5-base-v2"].dims == 768
    assert KNOWN_MODELS["intfloat/e5-large-v2"].dims == 1024
    assert KNOWN_MODELS["intfloat/multilingual-e5-small"].model_type == "xlm-roberta"
    for spec in KNOWN_MODELS.values():
        assert spec.max_length <= 512 and spec.pooling == "mean"
        if spec.model_id.startswith("intfloat/") and "instruct" not in spec.model_id:
            assert (spec.query_prefix, spec.passage_prefix) == ("query: ", "passage: ")
    assert not KNOWN_MODELS["sentence-transformers/paraphrase-albert-small-v2"].has_prefixes


def test_unknown_hub_id_is_refused_with_a_clear_message():
    with pytest.raises(UnknownModelError, match="Unknown model 'someone/not-a-model'"):
        resolve_model("someone/not-a-model")


def test_directory_without_config(tmp_path):
    with pytest.raises(UnknownModelError, match=r"no config\.json"):
        inspect_directory(tmp_path)


def test_inspects_local_checkpoints(tiny_bert, tiny_xlmr, minilm):
    bert = resolve_model(str(tiny_bert))
    assert (bert.dims, bert.model_type, bert.max_length, bert.normalize) == (32, "bert", 128, True)
    assert bert.weights_sha256 and len(bert.weights_sha256) == 64 and bert.local_path
    xlmr = resolve_model(str(tiny_xlmr))
    assert xlmr.model_type == "xlm-roberta" and xlmr.query_prefix == "query: " and xlmr.passage_prefix == "passage: "
    mini = resolve_model(str(minilm))
    assert (mini.dims, mini.max_length, mini.has_prefixes) == (384, 256, False)


def test_prompts_file_overrides_are_read(tmp_path, tiny_bert):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_bert, copy)
    (copy / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "search_query: "}}))
    assert resolve_model(str(copy)).query_prefix == "search_query: "
