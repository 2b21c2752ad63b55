"""The CLI against real nodes (click's CliRunner): idempotent deploy, dry-run, ingest with bad rows, resume,
error messages and exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.errors import (
    AuthenticationError,
    ClusterUnreachableError,
    ConfigurationError,
    DimensionMismatchError,
    IngestFailedError,
    UnknownModelError,
)
from e5plugin.ingest import Checkpoint, ingest, read_documents


def run(url: str, *args: str, env: dict | None = None):
    result = CliRunner().invoke(cli, ["--url", url, *args], env=env or {}, catch_exceptions=False)
    return result


def _jsonl(path, docs) -> str:
    path.write_text("\n".join(d if isinstance(d, str) else json.dumps(d) for d in docs) + "\n")
    return str(path)


@pytest.mark.elasticsearch
def test_deploy_twice_second_changes_nothing(elasticsearch, es_backend, tiny_e5_bert):
    es_backend.delete_index("cli-twice")  # a node reused from an earlier session (E5PLUGIN_TEST_*_URL) may have it
    args = ["deploy", "--model", str(tiny_e5_bert), "--index", "cli-twice", "--replicas", "0"]
    first = run(elasticsearch.url, *args)
    assert first.exit_code == 0, first.output
    assert "index       cli-twice (created)" in first.output and "mode        client" in first.output
    second = run(elasticsearch.url, *args)
    assert second.exit_code == 0 and "nothing changed" in second.output


@pytest.mark.elasticsearch
def test_dry_run_sends_nothing_and_masks_secrets(elasticsearch, es_backend, tiny_e5_bert):
    result = run(
        elasticsearch.url,
        "--username",
        "someone",
        "--password",
        "s3cret-Value",
        "deploy",
        "--model",
        str(tiny_e5_bert),
        "--index",
        "cli-dry",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "PUT /cli-dry" in result.output and '"dims": 32' in result.output
    assert "s3cret-Value" not in result.output and "****" in result.output
    assert not es_backend.index_exists("cli-dry")


@pytest.mark.elasticsearch
def test_ingest_bad_rows_are_reported_good_rows_land(elasticsearch, es_backend, tiny_e5_bert, tmp_path):
    assert (
        run(elasticsearch.url, "deploy", "-m", str(tiny_e5_bert), "-i", "cli-ingest", "--replicas", "0").exit_code == 0
    )
    source = _jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": "a", "text": "the first good row"},
            "{not json",
            {"id": "b", "text": "another good row"},
            "[1, 2, 3]",
            {"id": "c", "text": "a third good row"},
        ],
    )
    report = tmp_path / "report.json"
    result = run(elasticsearch.url, "ingest", source, "--index", "cli-ingest", "--report", str(report))
    assert result.exit_code == IngestFailedError.exit_code, result.output
    assert "indexed 3" in result.output and "failed 2" in result.output
    failures = json.loads(report.read_text())["failures"]
    assert [f["line"] for f in failures] == [2, 4] and "invalid JSON" in failures[0]["reason"]
    assert es_backend.count("cli-ingest") == 3
    search = run(elasticsearch.url, "search", "good row", "--index", "cli-ingest", "--json")
    assert search.exit_code == 0 and len(json.loads(search.output)) == 3


@pytest.mark.elasticsearch
def test_resume_after_an_interrupted_ingest(elasticsearch, es_backend, tiny_e5_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("E5PLUGIN_CACHE", str(tmp_path / "cache"))
    es_backend.delete_index("cli-resume")  # the count below is of this run's documents only
    assert (
        run(elasticsearch.url, "deploy", "-m", str(tiny_e5_bert), "-i", "cli-resume", "--replicas", "0").exit_code == 0
    )
    docs = [{"text": f"document number {i}"} for i in range(600)]  # no ids: derived from the content
    source = _jsonl(tmp_path / "big.jsonl", docs)
    from e5plugin.cli.ingest import _checkpoint_path
    from e5plugin.embed import Embedder
    from e5plugin.search import SemanticSearch

    setup = SemanticSearch.for_index("cli-resume", backend=es_backend).setup
    checkpoint = Checkpoint(_checkpoint_path("cli-resume", source), every=50)

    def interrupted():  # the file's records as the CLI reads them (each with its place in the file)
        with open(source, "rb") as stream:
            for record in read_documents(stream):
                if record.line > 350:
                    raise KeyboardInterrupt  # the operator hits Ctrl-C mid-run
                yield record

    with pytest.raises(KeyboardInterrupt):
        ingest(
            es_backend,
            "cli-resume",
            interrupted(),
            embedder=Embedder(setup.spec, plan=setup.plan),
            source_name="big.jsonl",
            batch_size=100,
            checkpoint=checkpoint,
        )
    assert 0 < Checkpoint(checkpoint.path).done <= 350
    result = run(elasticsearch.url, "ingest", source, "--index", "cli-resume", "--resume", "--batch-size", "100")
    assert result.exit_code == 0, result.output
    assert "skipped (resumed)" in result.output
    es_backend.refresh("cli-resume")
    assert es_backend.count("cli-resume") == 600  # nothing missing, nothing duplicated


@pytest.mark.elasticsearch
def test_error_messages_and_exit_codes(elasticsearch, tiny_e5_bert, minilm):
    from e5plugin.devcluster.node import free_port

    unreachable = run(f"http://127.0.0.1:{free_port()}", "doctor")
    assert unreachable.exit_code == ClusterUnreachableError.exit_code
    assert "Cannot reach" in unreachable.output and "Traceback" not in unreachable.output
    unknown = run(elasticsearch.url, "deploy", "--model", "nobody/no-such-model-xyz", "--index", "x")
    assert unknown.exit_code == UnknownModelError.exit_code and "Traceback" not in unknown.output
    assert run(elasticsearch.url, "deploy", "-m", str(tiny_e5_bert), "-i", "cli-dims", "--replicas", "0").exit_code == 0
    dims = run(elasticsearch.url, "deploy", "-m", str(minilm), "-i", "cli-dims")
    assert dims.exit_code == DimensionMismatchError.exit_code and "384" in dims.output
    not_ours = run(elasticsearch.url, "search", "x", "--index", "cli-not-there")
    assert not_ours.exit_code != 0 and "Traceback" not in not_ours.output
    bad_name = run(elasticsearch.url, "deploy", "-m", str(tiny_e5_bert), "-i", "../etc")
    assert bad_name.exit_code == ConfigurationError.exit_code and "Invalid index name" in bad_name.output


@pytest.mark.secured
def test_bad_credentials_exit_code_and_no_secret_in_output(secured_elasticsearch):
    result = run(secured_elasticsearch.url, "--username", "elastic", "--password", "Wr0ng-Secret-123", "doctor")
    assert result.exit_code == AuthenticationError.exit_code
    assert "refused the credentials" in result.output and "Wr0ng-Secret-123" not in result.output
    ok = run(
        secured_elasticsearch.url,
        "doctor",
        env={"E5PLUGIN_USERNAME": "elastic", "E5PLUGIN_PASSWORD": secured_elasticsearch.password},
    )
    assert "engine     elasticsearch" in ok.output and secured_elasticsearch.password not in ok.output


@pytest.mark.opensearch
def test_opensearch_server_deploy_ingest_search_doctor(opensearch, os_backend, tiny_e5_bert, tmp_path):
    os_backend.apply_one_node_ml_settings()
    args = ["deploy", "-m", str(tiny_e5_bert), "-i", "cli-os", "--mode", "server", "--replicas", "0"]
    first = run(opensearch.url, *args)
    assert first.exit_code == 0, first.output
    assert "passage added by cluster, query added by cluster" in first.output
    assert "nothing changed" in run(opensearch.url, *args).output
    source = _jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "reset password"}, {"id": "2", "text": "brown fox"}])
    assert run(opensearch.url, "ingest", source, "-i", "cli-os").exit_code == 0
    hits = json.loads(run(opensearch.url, "search", "password", "-i", "cli-os", "--json").output)
    assert hits[0]["id"] == "1"
    doctor = run(opensearch.url, "doctor", "--json")
    report = json.loads(doctor.output)
    entry = next(i for i in report["indices"] if i["index"] == "cli-os")
    assert entry["weights_sha256"] and entry["model_state"] == "DEPLOYED" and entry["documents"] == 2


@pytest.mark.elasticsearch
def test_every_command_that_takes_a_model_takes_the_prefix_choice(elasticsearch, tmp_path):
    """A plain checkout of an unknown model with no prompts, in a folder named like E5: refused by `index create`
    and `faq index` until the user says what the prefixes are (the options every model command has)."""
    from tiny_models import build_tiny_bert

    model = build_tiny_bert(tmp_path / "e5-small-v2", prompts={}, seed=11)
    refused = run(elasticsearch.url, "index", "create", "-m", str(model), "-i", "cli-no-prompts", "--dry-run")
    assert refused.exit_code == 13 and "--no-prefixes" in refused.output, refused.output
    chosen = run(
        elasticsearch.url, "index", "create", "-m", str(model), "-i", "cli-no-prompts", "--dry-run", "--no-prefixes"
    )
    assert chosen.exit_code == 0, chosen.output
    faq = tmp_path / "faq.jsonl"
    faq.write_text('{"question": "q", "answer": "a"}\n')
    refused = run(elasticsearch.url, "faq", "index", str(faq), "-i", "cli-no-prompts-faq", "-m", str(model))
    assert refused.exit_code == 13, refused.output
