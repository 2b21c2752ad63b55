"""Embedding and backfill on Apache Spark (local mode, real Python workers) against the real Elasticsearch node:
the vectors are the single-machine `passage: ` vectors, ids are those of `e5plugin ingest`, a task whose Python
worker dies mid-partition is retried without losing or duplicating a document, and a re-run changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pyspark")

from tiny_models import WORDS  # the tiny models' vocabulary: texts tokenize into real ids
from vectors import cosine as _cos

from e5plugin import spark as e5spark
from e5plugin.cli import cli
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import ingest, stable_id
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import IndexSetup, locate_model

pytestmark = [pytest.mark.elasticsearch, pytest.mark.spark]


@pytest.fixture(scope="module")
def spark():
    """Local mode with task retries: 2 worker threads, a task may fail 4 times (``local[2,4]``)."""
    session = e5spark.session("local[2,4]", conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _records(count: int) -> list[dict]:
    """Documents as `e5plugin ingest` reads them: every third one without an id (its id comes from its content)."""
    out = []
    for i in range(count):
        text = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 9)) + f" number {i}"
        out.append({"text": text, "n": i} if i % 3 == 0 else {"id": f"doc-{i}", "text": text, "n": i})
    return out


def _client_index(backend, model_dir: Path, index: str) -> IndexSetup:
    backend.delete_index(index)
    deploy(backend, resolve_model(str(model_dir)), DeployRequest(index=index, mode=Mode.CLIENT))
    return IndexSetup.from_meta(backend.index_meta(index))


def _local_embedder(setup: IndexSetup) -> Embedder:
    return Embedder(locate_model(setup.spec), plan=setup.plan)


def _vectors(backend, index: str) -> dict[str, np.ndarray]:
    return {doc_id: np.asarray(v, dtype=np.float32) for doc_id, v in backend.scan_vectors(index, "embedding")}


def _frame(spark, records: list[dict], partitions: int = 4):
    """A DataFrame as a user builds one from the records (``id`` null where a record has none)."""
    rows = [(r.get("id"), r["text"], r["n"]) for r in records]
    return spark.createDataFrame(rows, "id string, text string, n long").repartition(partitions)


def test_spark_vectors_are_the_local_passage_vectors(spark, es_backend, tiny_e5_bert, index_name):
    setup = _client_index(es_backend, tiny_e5_bert, index_name)
    records = _records(120)
    rows = e5spark.embed(_frame(spark, records), index=index_name, config=es_backend.config).collect()
    assert len(rows) == len(records)
    local = _local_embedder(setup)
    texts = [row["text"] for row in rows]
    right = local.encode_passages(texts)
    unprefixed = local.encode(texts)
    doubled = local.encode(["passage: passage: " + t for t in texts])
    for row, good, bare, twice in zip(rows, right, unprefixed, doubled, strict=True):
        vector = np.asarray(row["embedding"], dtype=np.float32)
        assert _cos(vector, good) > 0.9999
        assert _cos(vector, bare) < 0.9999 and _cos(vector, twice) < 0.9999
    es_backend.delete_index(index_name)


def _die_on_first_attempt(marker: Path):
    """A partition function for the test's own input: partition 0's first attempt exits its Python worker for real
    after handing on 50 rows (a closure: Spark ships it by value, the workers cannot import this test module)."""

    def die(rows):
        from pyspark import TaskContext

        context = TaskContext.get()
        for n, row in enumerate(rows):
            if n == 50 and context.partitionId() == 0 and context.attemptNumber() == 0:
                marker.write_text(str(os.getpid()))
                os._exit(1)
            yield row

    return die


def test_a_killed_worker_loses_and_duplicates_nothing_and_a_rerun_changes_nothing(
    spark, es_backend, tiny_e5_bert, index_name, tmp_path
):
    setup = _client_index(es_backend, tiny_e5_bert, index_name)
    records = _records(300)
    df = _frame(spark, records)
    marker = tmp_path / "killed"
    flaky = spark.createDataFrame(df.rdd.mapPartitions(_die_on_first_attempt(marker)), df.schema)
    embedded = e5spark.embed(flaky, index=index_name, config=es_backend.config, batch_size=16)
    report = e5spark.write(embedded, index=index_name, config=es_backend.config, chunk_size=20)
    assert marker.exists(), "partition 0's first attempt did not die"
    assert report.ok and report.indexed >= len(records)
    expected_ids = {stable_id(r) for r in records}
    first = _vectors(es_backend, index_name)
    assert es_backend.count(index_name) == len(records) and set(first) == expected_ids

    # the same ids and vectors as the single-machine `e5plugin ingest`
    other = index_name + "-single"
    _client_index(es_backend, tiny_e5_bert, other)
    assert ingest(es_backend, other, records, embedder=_local_embedder(setup), refresh=True).ok
    single = _vectors(es_backend, other)
    assert set(single) == expected_ids
    assert min(_cos(first[i], single[i]) for i in expected_ids) > 0.9999
    es_backend.delete_index(other)

    # re-running the job changes nothing
    again = e5spark.write(
        e5spark.embed(df, index=index_name, config=es_backend.config), index=index_name, config=es_backend.config
    )
    assert again.ok and again.indexed == len(records)
    second = _vectors(es_backend, index_name)
    assert es_backend.count(index_name) == len(records) and set(second) == set(first)
    assert all(np.allclose(first[i], second[i], atol=1e-5) for i in first)
    es_backend.delete_index(index_name)


def _raw_docs(backend, index: str, records: list[dict]) -> None:
    """Documents stored without vectors (e.g. written by another tool): what reindex backfills."""
    actions = ({"_index": index, "_id": stable_id(r), "_source": r} for r in records)
    for ok, item in backend.streaming_bulk(actions, chunk_size=500):
        assert ok, item
    backend.refresh(index)


def test_reindex_spark_backfills_like_the_single_machine_reindex(
    spark, elasticsearch, es_backend, tiny_e5_bert, index_name
):
    records = _records(240)
    spark_index, single_index = index_name, index_name + "-single"
    for index in (spark_index, single_index):
        _client_index(es_backend, tiny_e5_bert, index)
        _raw_docs(es_backend, index, records)
    runner = CliRunner()
    base = ["--url", elasticsearch.url]
    result = runner.invoke(cli, [*base, "reindex", "--index", spark_index, "--spark", "--master", "local[2]"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*base, "reindex", "--index", single_index])
    assert result.exit_code == 0, result.output
    with_spark, single = _vectors(es_backend, spark_index), _vectors(es_backend, single_index)
    assert set(with_spark) == set(single) == {stable_id(r) for r in records}
    assert min(_cos(with_spark[i], single[i]) for i in single) > 0.9999
    assert es_backend.count(spark_index) == len(records)
    # nothing left to do: a second run finds no document without a vector
    result = runner.invoke(cli, [*base, "reindex", "--index", spark_index, "--spark", "--master", "local[2]"])
    assert result.exit_code == 0 and "re-embedded 0" in result.output, result.output
    for index in (spark_index, single_index):
        es_backend.delete_index(index)


def test_a_killed_worker_during_backfill_loses_nothing_and_keeps_the_version_guarantee(
    spark, es_backend, tiny_e5_bert, index_name, tmp_path
):
    setup = _client_index(es_backend, tiny_e5_bert, index_name)
    records = _records(200)
    _raw_docs(es_backend, index_name, records)
    job = e5spark.prepare(index_name, es_backend.config)
    docs = e5spark.read_needing_embedding(spark, job, partitions=2)
    marker = tmp_path / "killed"
    flaky = spark.createDataFrame(docs.rdd.mapPartitions(_die_on_first_attempt(marker)), docs.schema)
    embedded = e5spark.embed(flaky, index=index_name, text_col=e5spark.BACKFILL_TEXT_COL, job=job, batch_size=16)
    report = e5spark.write(embedded, index=index_name, job=job, chunk_size=20)
    assert marker.exists()
    assert report.ok and report.conflicts == 0, report.to_dict()
    vectors = _vectors(es_backend, index_name)
    assert es_backend.count(index_name) == len(records) and set(vectors) == {stable_id(r) for r in records}
    local = _local_embedder(setup)
    texts = {stable_id(r): r["text"] for r in records}
    ids = sorted(vectors)
    expected = local.encode_passages([texts[i] for i in ids])
    assert min(_cos(vectors[i], e) for i, e in zip(ids, expected, strict=True)) > 0.9999
    es_backend.delete_index(index_name)


def test_ingest_spark_stores_what_ingest_stores(spark, elasticsearch, es_backend, tiny_e5_bert, index_name, tmp_path):
    import json

    records = _records(150)
    data = tmp_path / "docs.jsonl"
    lines = [json.dumps(r) for r in records]
    data.write_text("\n".join([*lines[:70], "{not json", "", *lines[70:]]) + "\n")
    spark_index, single_index = index_name, index_name + "-single"
    runner, base = CliRunner(), ["--url", elasticsearch.url]
    for index in (spark_index, single_index):
        _client_index(es_backend, tiny_e5_bert, index)
    result = runner.invoke(cli, [*base, "ingest", str(data), "--index", spark_index, "--spark"])
    assert result.exit_code != 0 and "indexed 150" in result.output and "failed 1" in result.output, result.output
    runner.invoke(cli, [*base, "ingest", str(data), "--index", single_index])
    with_spark, single = _vectors(es_backend, spark_index), _vectors(es_backend, single_index)
    assert set(with_spark) == set(single) == {stable_id(r) for r in records}
    assert min(_cos(with_spark[i], single[i]) for i in single) > 0.9999
    for index in (spark_index, single_index):
        es_backend.delete_index(index)
