"""Long documents on the real nodes: split into passages at ingest (nested vectors), found by any part of them.

A fact that sits only past the model's 512 (here: 256) tokens is found through its passage, where an unchunked
index, which embeds only the beginning, misses it. Client mode on both engines, server mode on OpenSearch (the
``text_embedding`` processor embeds the nested passages; both prefix paths)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from vectors import cosine as _cos

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch
from e5plugin.tasks.chunking import ChunkingSettings

TOPICS = ["budget", "schedule", "catering", "parking", "printer", "holiday", "training", "security", "recycling"]
FILLER = " ".join(
    f"Item {i}: the committee discussed the {TOPICS[i % len(TOPICS)]} plan for the {i}th week and agreed to "
    f"revisit the {TOPICS[(i * 5) % len(TOPICS)]} figures at the next meeting."
    for i in range(45)
)
TAIL = "Appendix: the spare key to the lighthouse lantern room is kept under the blue stone by the north gate."
DOCS = [
    {"id": "minutes", "text": FILLER + " " + TAIL, "lang": "en"},
    {"id": "keeper", "text": "The lighthouse keeper painted the tower white in the spring.", "lang": "en"},
    {"id": "office", "text": "Office keys are handed out by the reception desk on the ground floor.", "lang": "en"},
    {"id": "gate", "text": "The north gate of the park closes at sunset.", "lang": "de"},
]
QUERY = "Where is the spare key to the lighthouse lantern room kept?"


@pytest.fixture(params=["elasticsearch", "opensearch"])
def backend(request):
    return request.getfixturevalue("es_backend" if request.param == "elasticsearch" else "os_backend")


def test_a_fact_in_the_tail_of_a_long_document_is_found(backend, minilm):
    spec = resolve_model(str(minilm))  # reads 256 tokens; the minutes are about 1,100
    embedder = Embedder(spec)
    assert len(embedder.model.tokenizer(DOCS[0]["text"])["input_ids"]) > 4 * spec.max_length
    backend.delete_index("long-plain")
    backend.delete_index("long-chunked")
    deploy(backend, spec, DeployRequest(index="long-plain", mode=Mode.CLIENT, replicas=0))
    result = deploy(
        backend,
        spec,
        DeployRequest(
            index="long-chunked",
            mode=Mode.CLIENT,
            replicas=0,
            chunking=ChunkingSettings(chunk_size=128, overlap=32),
        ),
    )
    assert result.setup.vector_field == "passages.embedding" and result.setup.chunking.chunk_size == 128
    mapping = backend.get_mapping("long-chunked")["properties"]
    assert mapping["passages"]["type"] == "nested" and mapping["lang"]["type"] == "keyword"
    for index in ("long-plain", "long-chunked"):  # ingest finds the chunking in the index's _meta by itself
        assert ingest(backend, index, DOCS, embedder=embedder, refresh=True).ok

    stored = backend.get_document("long-chunked", "minutes")
    passages = stored["passages"]
    assert len(passages) >= 9 and stored["text"] == DOCS[0]["text"]  # the parent keeps its whole text
    covered = np.zeros(len(stored["text"]), dtype=bool)
    for p in passages:
        assert stored["text"][p["start"] : p["end"]] == p["text"]
        covered[p["start"] : p["end"]] = True
        assert len(embedder.model.tokenizer(p["text"])["input_ids"]) <= spec.max_length  # nothing cut off
    assert all(covered[i] for i, ch in enumerate(stored["text"]) if not ch.isspace())  # nothing left out
    last = passages[-1]
    assert TAIL in last["text"] and _cos(last["embedding"], embedder.encode([last["text"]])[0]) > 0.9999
    short = backend.get_document("long-chunked", "keeper")["passages"]
    assert [p["text"] for p in short] == [DOCS[1]["text"]]  # a short document is one passage

    chunked = SemanticSearch.for_index("long-chunked", backend=backend, embedder=embedder).search(QUERY, k=3)
    assert chunked[0].id == "minutes" and "blue stone" in chunked[0].passage["text"]
    assert "passages" not in chunked[0].source and chunked[0].source["lang"] == "en"  # parent, without passages
    best = max(_cos(embedder.encode([QUERY])[0], p["embedding"]) for p in passages)
    assert chunked[0].similarity == pytest.approx(best, abs=2e-3)  # scored by its best passage
    plain = SemanticSearch.for_index("long-plain", backend=backend, embedder=embedder).search(QUERY, k=4)
    plain_minutes = next(h for h in plain if h.id == "minutes")
    assert plain[0].id != "minutes" and plain_minutes.similarity < chunked[0].similarity - 0.2  # truncated: missed

    german = SemanticSearch.for_index("long-chunked", backend=backend, embedder=embedder).search(
        QUERY, k=3, filters={"term": {"lang": "de"}}
    )
    assert [h.id for h in german] == ["gate"]
    hybrid = SemanticSearch.for_index("long-chunked", backend=backend, embedder=embedder).search(
        "spare key lantern room blue stone", k=2, hybrid=True
    )
    assert hybrid[0].id == "minutes" and hybrid[0].passage is not None


@pytest.mark.opensearch
@pytest.mark.parametrize("cluster_prefixes", [True, False], ids=["prefixes-in-model-config", "prefixes-in-pipeline"])
def test_server_mode_embeds_every_passage_in_the_cluster(opensearch, ml_ready, tiny_e5_bert, cluster_prefixes):
    backend = ml_ready
    original = backend._capabilities
    backend._capabilities = dataclasses.replace(backend.capabilities, cluster_prefixes=cluster_prefixes)
    try:
        spec = resolve_model(str(tiny_e5_bert))  # max 128 tokens
        index = f"long-server-{'cluster' if cluster_prefixes else 'pipeline'}"
        backend.delete_index(index)
        request = DeployRequest(
            index=index,
            mode=Mode.SERVER,
            model_id=f"tiny-e5-{index}",
            replicas=0,
            chunking=ChunkingSettings(chunk_size=40, overlap=8),
        )
        result = deploy(backend, spec, request)
        assert result.setup.plan.ingest is (Actor.CLUSTER if cluster_prefixes else Actor.PIPELINE)
        text = (
            " ".join(["the quick brown fox jumps over the lazy dog"] * 30) + " how to reset a password for the account"
        )
        docs = [{"id": "long", "text": text}, {"id": "short", "text": "hello world"}, {"id": "no-text"}]
        report = ingest(backend, index, docs, refresh=True)  # server mode: no embedder, the pipeline embeds
        assert report.ok and report.indexed == 3
        local = Embedder(spec)
        stored = backend.get_document(index, "long")
        assert len(stored["passages"]) > 5 and "e5plugin_error" not in stored
        for p in stored["passages"]:
            assert set(p) == {"text", "start", "end", "embedding"}  # the temporary prefix field is gone
            assert _cos(p["embedding"], local.encode(["passage: " + p["text"]])[0]) > 0.999  # prefixed once
        assert "password" in stored["passages"][-1]["text"]
        assert backend.get_document(index, "no-text")["e5plugin_error"]["reason"]  # kept, marked
        hits = SemanticSearch.for_index(index, backend=backend).search("reset my password", k=2)
        q = local.encode(["query: reset my password"])[0]
        scores = {
            doc: max(_cos(q, p["embedding"]) for p in backend.get_document(index, doc)["passages"])
            for doc in ("long", "short")
        }
        assert [h.id for h in hits] == sorted(scores, key=lambda d: -scores[d])
        assert hits[0].similarity == pytest.approx(scores[hits[0].id], abs=2e-3)
        assert hits[0].passage and hits[0].passage["offset"] is not None
        _pipeline_install_restores(backend, opensearch.url, index, result.setup.pipeline)
    finally:
        backend._capabilities = original


def _pipeline_install_restores(backend, url: str, index: str, pipeline: str) -> None:
    """A deleted pipeline is flagged by doctor; `pipeline install` puts back exactly what deploy installed."""
    from e5plugin.cli import cli

    installed = backend.get_pipeline(pipeline)
    backend.client.ingest.delete_pipeline(id=pipeline)
    doctor = CliRunner().invoke(cli, ["--url", url, "doctor"])
    assert f"Pipeline {pipeline!r} of index {index!r} is missing" in doctor.output
    first = CliRunner().invoke(cli, ["--url", url, "pipeline", "install", "-i", index], catch_exceptions=False)
    assert first.exit_code == 0 and first.output.strip() == f"{pipeline}: created", first.output
    assert backend.get_pipeline(pipeline) == installed  # the chunked pipeline, not a plain one
    again = CliRunner().invoke(cli, ["--url", url, "pipeline", "install", "-i", index], catch_exceptions=False)
    assert again.output.strip() == f"{pipeline}: unchanged", again.output


@pytest.mark.elasticsearch
def test_cli_chunks_deploy_ingest_search(elasticsearch, es_backend, minilm, tmp_path):
    from e5plugin.cli import cli

    es_backend.delete_index("cli-long")
    runner = CliRunner()
    base = ["--url", elasticsearch.url]
    deployed = runner.invoke(
        cli,
        [*base, "chunks", "deploy", "-m", str(minilm), "-i", "cli-long", "--chunk-size", "100", "--replicas", "0"],
        catch_exceptions=False,
    )
    assert deployed.exit_code == 0, deployed.output
    assert "passages    100 tokens, overlap 64, in passages.embedding" in deployed.output
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    ingested = runner.invoke(cli, [*base, "ingest", str(source), "-i", "cli-long"], catch_exceptions=False)
    assert ingested.exit_code == 0 and "indexed 4" in ingested.output, ingested.output
    found = runner.invoke(cli, [*base, "search", QUERY, "-i", "cli-long", "-k", "1", "--json"], catch_exceptions=False)
    assert json.loads(found.output)[0]["id"] == "minutes"
    text = tmp_path / "long.txt"
    text.write_text(DOCS[0]["text"])
    split = runner.invoke(cli, ["chunks", "split", str(text), "-m", str(minilm), "--chunk-size", "100"])
    lines = [json.loads(line) for line in split.output.splitlines()]
    assert split.exit_code == 0 and len(lines) > 10 and all(p["tokens"] <= 100 for p in lines)
    too_big = runner.invoke(cli, [*base, "chunks", "deploy", "-m", str(minilm), "-i", "x", "--chunk-size", "300"])
    assert too_big.exit_code == 2 and "more than the model reads" in too_big.output
