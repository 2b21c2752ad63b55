"""Backfill: embed documents of an index that have no vector yet, or whose embedding failed (marker set).

Client mode streams: the documents that need a vector are read page by page (scroll, ``batch_size`` at a time, with
their ``_seq_no``/``_primary_term``), embedded and written back with ``if_seq_no``/``if_primary_term``, so memory stays
bounded and a document edited while the backfill runs keeps the edit (the write is refused as a version conflict,
counted in ``conflicts``; a re-run picks the document up if it still needs a vector).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from .bodies import ERROR_FIELD
from .embed import Embedder
from .engines.base import Backend
from .ingest import IngestReport, SourceDoc, ingest
from .prefixes import Mode
from .search import IndexSetup

VERSION_CONFLICT = "version_conflict_engine_exception"


@dataclass
class BackfillReport(IngestReport):
    #: documents edited while the backfill ran: the edit was kept (not overwritten); a re-run embeds them if needed
    conflicts: int = 0

    def to_dict(self) -> dict:
        return {**super().to_dict(), "conflicts": self.conflicts}


#: ``--bulk-settings auto`` switches an empty (new) index to bulk-load settings for inputs at least this large.
BULK_SETTINGS_MIN_BYTES = 10 << 20


def bulk_settings_wanted(backend: Backend, index: str, choice: str, input_bytes: int | None) -> bool:
    """Whether a load runs with bulk-load settings (refresh off, no replicas). ``on``/``off`` are the user's;
    ``auto`` is on only for a large input into an index that holds no documents yet: a live index keeps serving
    searches (fresh results, replicas), so changing it is opt-in (``on``)."""
    if choice in ("on", "off"):
        return choice == "on"
    if input_bytes is None or input_bytes < BULK_SETTINGS_MIN_BYTES:
        return False
    return backend.index_exists(index) and backend.count(index) == 0


def has_vector_query(vector_field: str, nested_path: str | None = None) -> dict:
    """Documents with a vector; on a chunked index, with a passage (nested under ``nested_path``) that has one: a
    root-level ``exists`` on a nested field matches nothing."""
    exists = {"exists": {"field": vector_field}}
    return {"nested": {"path": nested_path, "query": exists}} if nested_path else exists


def needs_embedding_query(vector_field: str, nested_path: str | None = None) -> dict:
    """Documents without a vector, or with a failure marker from an earlier attempt."""
    return {
        "bool": {
            "should": [
                {"bool": {"must_not": has_vector_query(vector_field, nested_path)}},
                {"exists": {"field": ERROR_FIELD}},
            ],
            "minimum_should_match": 1,
        }
    }


def backfill(
    backend: Backend,
    index: str,
    setup: IndexSetup,
    *,
    embedder: Embedder | None = None,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    poll_seconds: float = 1.0,
    refresh: bool = True,
) -> BackfillReport:
    """Server mode: ``_update_by_query`` through the index's pipeline, progress from the task API.
    Client mode: stream the documents that need a vector, embed locally, write them back under the same ids unless
    they changed meanwhile (see the module docstring). ``refresh``: refresh before counting and after writing (the
    ``maintenance`` index privilege); without it, what the last refresh interval made visible is backfilled."""
    nested = setup.chunking.field if setup.chunking else None
    query = needs_embedding_query(setup.vector_field, nested)
    if refresh:
        backend.refresh(index)
    total = backend.count(index, query)
    if total == 0:
        return BackfillReport()
    if setup.mode is Mode.SERVER:
        return _server_backfill(backend, index, setup, query, total, batch_size, progress, poll_seconds)
    if embedder is None:
        from .search import locate_model, split_embed_backend

        name, quantize = split_embed_backend(setup.embed_backend)  # the backend that embedded the other documents
        spec = locate_model(setup.spec)  # this host's copy (E5PLUGIN_MODEL_DIR), checked against the recorded hash
        embedder = Embedder(spec, plan=setup.plan, backend=name, quantize=quantize)

    def records() -> Iterator[SourceDoc]:
        body = {"query": query, "seq_no_primary_term": True}
        for n, hit in enumerate(backend.scan_ahead(index, body, size=batch_size), start=1):
            doc = dict(hit["_source"])
            doc.pop(ERROR_FIELD, None)
            doc.pop(setup.vector_field, None)
            write_if = None
            if hit.get("_seq_no") is not None:
                write_if = {"if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"]}
            yield SourceDoc(n, doc, doc_id=hit["_id"], write_if=write_if)

    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    # The scroll reads a snapshot (ahead of the embedder, never waiting for it); writes under it are safe and
    # conditional on the version that was read.
    done_report = ingest(
        backend,
        index,
        records(),
        text_field=setup.text_field,
        vector_field=setup.vector_field,
        embedder=embedder,
        batch_size=batch_size,
        progress=tick,
    )
    report = BackfillReport(**{f.name: getattr(done_report, f.name) for f in fields(done_report) if f.init})
    conflicts = [f for f in report.failures if VERSION_CONFLICT in f.reason]
    report.conflicts = len(conflicts)
    report.failed -= len(conflicts)
    report.failures = [f for f in report.failures if VERSION_CONFLICT not in f.reason]
    if refresh:
        backend.refresh(index)
    return report


def _server_backfill(
    backend: Backend,
    index: str,
    setup: IndexSetup,
    query: dict,
    total: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
    poll_seconds: float,
) -> BackfillReport:
    with backend.errors():
        task = backend.client.update_by_query(
            index=index,
            body={"query": query},
            pipeline=setup.pipeline,
            wait_for_completion=False,
            conflicts="proceed",
            scroll_size=batch_size,
            refresh=True,
        )
    task_id = task["task"]
    while True:
        with backend.errors():
            status = backend.client.tasks.get(task_id=task_id)
        task_status = status["task"]["status"]
        if progress:
            progress(task_status.get("updated", 0), task_status.get("total", total))
        if status.get("completed"):
            break
        time.sleep(poll_seconds)
    response = status.get("response", {})
    report = BackfillReport(
        indexed=int(response.get("updated", 0)), conflicts=int(response.get("version_conflicts", 0))
    )
    report.failed = len(response.get("failures", []))
    backend.refresh(index)
    report.without_vector = backend.count(index, {"exists": {"field": ERROR_FIELD}})
    return report
