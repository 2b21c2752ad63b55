"""The model's family (which prefixes it was trained with) comes from the checkpoint's content: a fingerprint of its
weights, else the prompts it declares. Never from a file or folder name; a model for which nothing tells is refused
until the user chooses (prefixes, or --no-prefixes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e5plugin.errors import UndecidedPrefixesError
from e5plugin.models import (
    FAMILY_CUSTOM,
    FAMILY_E5,
    FAMILY_PLAIN,
    KNOWN_FINGERPRINTS,
    KNOWN_MODELS,
    resolve_model,
    weights_fingerprint,
)
from e5plugin.tasks.calibrate import DEFAULT_THRESHOLDS, default_threshold


@pytest.fixture(scope="module")
def promptless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT whose config_sentence_transformers.json has ``"prompts": {}``: it declares nothing."""
    from tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("family") / "no-prompts", prompts={}, seed=7)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_a_model_without_prompts_that_nothing_recognises_is_refused(promptless: Path) -> None:
    with pytest.raises(UndecidedPrefixesError, match=r"--query-prefix/--passage-prefix.*--no-prefixes") as err:
        resolve_model(str(promptless))
    assert err.value.exit_code == 13


def test_the_refusal_does_not_depend_on_the_folder_name(promptless: Path, tmp_path: Path) -> None:
    for name in ("e5", "e5-small-v2", "multilingual-e5-small"):
        with pytest.raises(UndecidedPrefixesError):
            resolve_model(str(_copy(promptless, tmp_path / name)))


def test_an_explicit_choice_is_accepted_and_recorded(promptless: Path) -> None:
    none = resolve_model(str(promptless), no_prefixes=True)
    assert (none.query_prefix, none.passage_prefix, none.family) == ("", "", FAMILY_PLAIN)
    assert none.family_source == "--no-prefixes"
    e5 = resolve_model(str(promptless), query_prefix="query: ", passage_prefix="passage: ")
    assert (e5.family, e5.family_source) == (FAMILY_E5, "explicit --query-prefix/--passage-prefix")
    other = resolve_model(str(promptless), query_prefix="search_query: ")
    assert (other.query_prefix, other.passage_prefix, other.family) == ("search_query: ", "", FAMILY_CUSTOM)
    assert "family" in none.to_dict() and none.to_dict()["family_source"] == "--no-prefixes"


def test_empty_prompts_declare_a_plain_model_and_an_empty_prompts_dict_does_not(promptless: Path, tmp_path) -> None:
    plain = _copy(promptless, tmp_path / "e5")  # the folder name must not matter
    (plain / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "", "passage": ""}}))
    spec = resolve_model(str(plain))
    assert (spec.query_prefix, spec.passage_prefix, spec.family) == ("", "", FAMILY_PLAIN)
    assert "config_sentence_transformers.json" in spec.family_source
    nulls = _copy(promptless, tmp_path / "nulls")  # sentence-transformers 5 saves unset prompts as null
    (nulls / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": None, "document": None}}))
    with pytest.raises(UndecidedPrefixesError):
        resolve_model(str(nulls))


def test_declared_e5_prompts_make_an_e5_model(tiny_e5_bert: Path) -> None:
    spec = resolve_model(str(tiny_e5_bert))
    assert (spec.family, spec.query_prefix, spec.passage_prefix) == (FAMILY_E5, "query: ", "passage: ")


def test_a_plain_tiny_model_in_a_folder_named_e5_is_not_e5(tiny_bert: Path, tmp_path: Path) -> None:
    for name in ("e5", "e5-small-v2"):
        spec = resolve_model(str(_copy(tiny_bert, tmp_path / name / "intfloat-e5-small-v2")))
        assert (spec.family, spec.has_prefixes) == (FAMILY_PLAIN, False)
        meta = {"model": spec.to_dict()}
        assert default_threshold(meta, "faq") == (DEFAULT_THRESHOLDS["faq"]["other"], "default (other)")
        assert default_threshold(meta, "dedup") == (DEFAULT_THRESHOLDS["dedup"]["other"], "default (other)")


def test_minilm_is_recognised_by_its_weights_even_in_a_folder_named_e5(minilm: Path, tmp_path: Path) -> None:
    copy = _copy(minilm, tmp_path / "e5")
    (copy / "config_sentence_transformers.json").unlink()  # nothing declared: only the weights tell
    spec = resolve_model(str(copy))
    assert (spec.family, spec.has_prefixes) == (FAMILY_PLAIN, False)
    assert spec.family_source == "weights fingerprint of sentence-transformers/all-MiniLM-L6-v2"
    assert default_threshold({"model": spec.to_dict()}, "faq")[1] == "default (other)"


def test_the_fingerprint_survives_fp16_storage_and_the_bin_format(minilm: Path, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    expected = weights_fingerprint(minilm)
    assert KNOWN_FINGERPRINTS[expected] == "sentence-transformers/all-MiniLM-L6-v2"
    half = tmp_path / "fp16"
    half.mkdir()
    tensors = load_file(str(minilm / "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(half / "model.safetensors"))
    assert weights_fingerprint(half) == expected
    torch = pytest.importorskip("torch")
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save({k: torch.from_numpy(v.astype(np.float16)) for k, v in tensors.items()}, binary / "pytorch_model.bin")
    assert weights_fingerprint(binary) == expected


def test_random_weights_are_not_recognised(tiny_bert: Path, tiny_e5_bert: Path) -> None:
    assert weights_fingerprint(tiny_bert) not in KNOWN_FINGERPRINTS
    assert weights_fingerprint(tiny_e5_bert) not in KNOWN_FINGERPRINTS
    assert weights_fingerprint(tiny_bert) != weights_fingerprint(tiny_e5_bert)


def test_every_known_fingerprint_names_a_known_model_with_a_family() -> None:
    for hub_id in KNOWN_FINGERPRINTS.values():
        assert KNOWN_MODELS[hub_id].family


def test_known_hub_ids_carry_their_family() -> None:
    assert resolve_model("intfloat/e5-small-v2").family == FAMILY_E5
    assert resolve_model("intfloat/multilingual-e5-large-instruct").family == "e5-instruct"
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").family == FAMILY_PLAIN


def test_legacy_meta_without_a_family_is_still_read() -> None:
    from e5plugin.search import IndexSetup

    spec = KNOWN_MODELS["intfloat/e5-small-v2"].to_dict()
    legacy = {k: v for k, v in spec.items() if k not in ("family", "family_source")}
    meta = {
        "model": legacy,
        "mode": "client",
        "prefixes": {
            "passage_prefix": "passage: ",
            "query_prefix": "query: ",
            "ingest": "embedder",
            "query": "embedder",
        },
        "text_field": "text",
        "vector_field": "embedding",
    }
    setup = IndexSetup.from_meta(meta)
    assert setup.spec.family == "" and setup.spec.query_prefix == "query: "
    assert default_threshold(meta, "faq") == (DEFAULT_THRESHOLDS["faq"]["e5"], "default (e5)")


@pytest.mark.slow
def test_a_fine_tuned_plain_model_still_says_it_takes_no_prefixes(tiny_bert: Path, tmp_path: Path) -> None:
    """Fine-tuning changes the weights (no fingerprint matches any more): the saved prompts carry the decision,
    empty ones included, so the result is not refused."""
    pytest.importorskip("sentence_transformers")
    from e5plugin.tasks.finetune import FinetuneConfig, Pair, train

    pairs = [Pair(f"question {i} about the password", f"answer {i}: reset the password") for i in range(8)]
    base = resolve_model(str(tiny_bert))
    train(base, pairs, tmp_path / "tuned", FinetuneConfig(batch_size=4, max_steps=1))
    tuned = resolve_model(str(tmp_path / "tuned"))
    assert (tuned.family, tuned.has_prefixes) == (FAMILY_PLAIN, False)


def test_sentence_transformers_default_prompts_are_not_a_declaration(tmp_path):
    """sentence-transformers >= 5 saves {"query": "", "document": ""} for every model: an E5 fine-tuned in a user's
    own script carries it and must not be deployed silently without prefixes."""
    import json

    from e5plugin.models import declared_prompts

    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "", "document": ""}}))
    assert declared_prompts(tmp_path) is None
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "", "passage": ""}}))
    assert declared_prompts(tmp_path) == {"query": "", "passage": ""}
