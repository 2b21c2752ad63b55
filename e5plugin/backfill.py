"""Backfill: embed documents of an index that have no vector yet, or whose embedding failed (marker set)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from .bodies import ERROR_FIELD
from .embed import Embedder
from .engines.base import Backend
from .ingest import IngestReport, SourceDoc, ingest
from .prefixes import Mode
from .search import IndexSetup


def needs_embedding_query(vector_field: str) -> dict:
    """Documents without a vector, or with a failure marker from an earlier attempt."""
    return {
        "bool": {
            "should": [
                {"bool": {"must_not": {"exists": {"field": vector_field}}}},
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
) -> IngestReport:
    """Server mode: ``_update_by_query`` through the index's pipeline, progress from the task API.
    Client mode: scan the documents, embed locally, write them back under the same ids."""
    query = needs_embedding_query(setup.vector_field)
    backend.refresh(index)
    total = backend.count(index, query)
    if total == 0:
        return IngestReport()
    if setup.mode is Mode.SERVER:
        return _server_backfill(backend, index, setup, query, total, batch_size, progress, poll_seconds)
    embedder = embedder or Embedder(setup.spec, plan=setup.plan)

    def records() -> Iterator[SourceDoc]:
        for n, hit in enumerate(backend.scan(index, {"query": query}, size=batch_size), start=1):
            doc = dict(hit["_source"])
            doc.pop(ERROR_FIELD, None)
            doc.pop(setup.vector_field, None)
            yield SourceDoc(n, doc, doc_id=hit["_id"])

    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    docs = list(records())  # scroll first, then rewrite: never update documents under an open scroll cursor
    report = ingest(
        backend,
        index,
        docs,
        text_field=setup.text_field,
        vector_field=setup.vector_field,
        embedder=embedder,
        batch_size=batch_size,
        progress=tick,
    )
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
) -> IngestReport:
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
    report = IngestReport(indexed=int(response.get("updated", 0)))
    report.failed = len(response.get("failures", []))
    backend.refresh(index)
    report.without_vector = backend.count(index, {"exists": {"field": ERROR_FIELD}})
    return report
