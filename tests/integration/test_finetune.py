"""Fine-tuning, then a new model version rolled out behind an alias on the real nodes: the new model is written,
deployed into a new versioned index, the alias switched atomically, and searches work before and after (a helper
created before the switch notices it and embeds queries with the new model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from e5plugin.deploy import DeployRequest
from e5plugin.embed import Embedder
from e5plugin.errors import ConfigurationError
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch
from e5plugin.tasks.finetune import REPORT_FILE, FinetuneConfig, Pair, finetune
from e5plugin.tasks.rollout import rollout

TOPICS = ["password", "login", "cluster", "vector", "fox", "dog", "cat", "house", "car", "index"]
PAIRS = [Pair(f"question about the {w}", f"the answer about the {w} is here") for w in TOPICS]
DOCS = [{"id": str(i), "text": p.passage, "lang": "en"} for i, p in enumerate(PAIRS)]


@pytest.fixture(params=["elasticsearch", "opensearch"])
def backend(request):
    return request.getfixturevalue("es_backend" if request.param == "elasticsearch" else "os_backend")


@pytest.fixture(scope="module")
def tuned(tiny_e5_bert, tmp_path_factory):
    """One training step on a handful of pairs (a tiny random model: this checks the plumbing, not quality)."""
    out = tmp_path_factory.mktemp("finetune") / "tiny-e5-ft"
    report = finetune(resolve_model(str(tiny_e5_bert)), PAIRS, out, FinetuneConfig(batch_size=4, max_steps=1))
    return report


def test_the_fine_tuned_model_is_written_with_the_same_prefixes(tuned, tiny_e5_bert):
    base = resolve_model(str(tiny_e5_bert))
    spec = tuned.spec
    assert (spec.query_prefix, spec.passage_prefix) == ("query: ", "passage: ")
    assert (spec.dims, spec.max_length) == (base.dims, base.max_length)
    assert spec.weights_sha256 != base.weights_sha256  # the weights changed
    record = json.loads((Path(spec.local_path) / REPORT_FILE).read_text())
    assert record["training"]["steps"] == 1 and record["heldout_queries"] == 1 and record["train_pairs"] == 9
    assert 0.0 <= record["ndcg@10_before"] <= 1.0 and 0.0 <= record["ndcg@10_after"] <= 1.0
    with pytest.raises(ConfigurationError, match="not empty"):
        finetune(base, PAIRS, spec.local_path, FinetuneConfig(max_steps=1))


def test_new_version_behind_the_alias_without_downtime(backend, tiny_e5_bert, tuned):
    alias = "ft-alias"
    for name in backend.alias_indices(alias) + backend.list_indices(f"{alias}-v*"):
        backend.delete_index(name)
    base = resolve_model(str(tiny_e5_bert))
    first = rollout(
        backend, base, alias, documents=DOCS, request=DeployRequest(index=alias, mode=Mode.CLIENT, replicas=0)
    )
    assert (first.index, first.previous, first.copied) == (f"{alias}-v1", [], len(DOCS))
    assert backend.alias_indices(alias) == [f"{alias}-v1"]
    helper = SemanticSearch.for_index(alias, backend=backend)  # the application's long-lived helper
    before = helper.search("question about the password", k=3)
    assert before and before[0].index == f"{alias}-v1"

    second = rollout(backend, tuned.spec, alias, check_query="password")  # documents copied from v1
    assert (second.index, second.previous, second.copied) == (f"{alias}-v2", [f"{alias}-v1"], len(DOCS))
    assert backend.alias_indices(alias) == [f"{alias}-v2"]  # switched
    assert backend.index_exists(f"{alias}-v1")  # kept for a rollback
    setup = SemanticSearch.for_index(f"{alias}-v2", backend=backend).setup
    assert setup.spec.model_id == tuned.spec.model_id and backend.count(f"{alias}-v2") == len(DOCS)
    new_model = Embedder(tuned.spec)
    stored = backend.get_document(f"{alias}-v2", "0")
    assert stored["lang"] == "en" and "e5plugin_error" not in stored
    assert np.allclose(stored["embedding"], new_model.encode(["passage: " + DOCS[0]["text"]])[0], atol=1e-5)

    after = helper.search("question about the password", k=3)
    assert after and after[0].index == f"{alias}-v2"
    assert helper.setup.spec.model_id == tuned.spec.model_id  # the helper re-read the setup after the switch
    q = new_model.encode(["query: question about the password"])[0]
    top = backend.get_document(f"{alias}-v2", after[0].id)["embedding"]
    assert after[0].similarity == pytest.approx(float(np.dot(q, top)), abs=2e-3)  # query embedded by the new model

    backend.switch_alias(alias, f"{alias}-v1")  # rollback is one atomic switch
    assert backend.alias_indices(alias) == [f"{alias}-v1"] and helper.search("password", k=1)[0].index == f"{alias}-v1"
    with pytest.raises(ConfigurationError, match="is an index, not an alias"):
        rollout(backend, base, f"{alias}-v1")


@pytest.mark.elasticsearch
def test_cli_finetune_and_deploy(elasticsearch, es_backend, tiny_e5_bert, tmp_path):
    from e5plugin.cli import cli

    for name in es_backend.alias_indices("cli-ft") + es_backend.list_indices("cli-ft-v*"):
        es_backend.delete_index(name)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"query": p.query, "passage": p.passage}) for p in PAIRS) + "\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    runner = CliRunner()
    base = ["--url", elasticsearch.url]
    first = runner.invoke(
        cli, [*base, "rollout", "-m", str(tiny_e5_bert), "--alias", "cli-ft", "--source", str(docs), "--replicas", "0"]
    )
    assert first.exit_code == 0 and "cli-ft -> cli-ft-v1 (was nothing)" in first.output, first.output
    out = tmp_path / "model-v2"
    result = runner.invoke(
        cli,
        [
            *base,
            "finetune",
            "-m",
            str(tiny_e5_bert),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            "--deploy",
            "--index",
            "cli-ft",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["training"]["steps"] == 1 and (out / "model.safetensors").is_file()
    assert data["rollout"]["index"] == "cli-ft-v2" and data["rollout"]["previous"] == ["cli-ft-v1"]
    shown = runner.invoke(cli, [*base, "alias", "show", "cli-ft"])
    assert shown.exit_code == 0 and "cli-ft -> cli-ft-v2 (model " in shown.output and "model-v2" in shown.output
    found = runner.invoke(cli, [*base, "search", "password", "-i", "cli-ft", "--json"], catch_exceptions=False)
    assert found.exit_code == 0 and json.loads(found.output)
    back = runner.invoke(cli, [*base, "alias", "switch", "--alias", "cli-ft", "--index", "cli-ft-v1"])
    assert back.exit_code == 0 and "cli-ft -> cli-ft-v1 (was cli-ft-v2)" in back.output
