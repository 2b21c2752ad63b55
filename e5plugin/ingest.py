"""Streaming bulk ingest: stable ids, retries with backoff on 429, a per-document failure report, resume.

Server mode sends documents as they are (the index's default pipeline embeds them). Client mode embeds locally
and sends the vectors; encoding of the next batch overlaps with the bulk request of the current one.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .bodies import ERROR_FIELD
from .embed import Embedder
from .engines.base import Backend

MAX_REPORTED_FAILURES = 10_000


@dataclass
class Failure:
    id: str | None
    line: int | None
    reason: str


@dataclass
class IngestReport:
    indexed: int = 0
    without_vector: int = 0  # stored, with an e5plugin_error marker saying why it has no vector
    skipped: int = 0  # already ingested before a --resume
    failures: list[Failure] = field(default_factory=list)
    failed: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict:
        return {
            "indexed": self.indexed,
            "without_vector": self.without_vector,
            "skipped": self.skipped,
            "failed": self.failed,
            "failures": [f.__dict__ for f in self.failures],
        }


@dataclass
class SourceDoc:
    """One input record: its position in the input, and the document or why it could not be read."""

    line: int
    doc: dict | None
    error: str | None = None
    doc_id: str | None = None  # an existing document's id (backfill); else derived by stable_id


def read_documents(stream: IO[str], fmt: str = "jsonl") -> Iterator[SourceDoc]:
    """JSON Lines or CSV records; unreadable rows become errors in the report, not exceptions."""
    if fmt == "csv":
        for number, row in enumerate(csv.DictReader(stream), start=2):
            yield SourceDoc(number, dict(row))
        return
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            yield SourceDoc(number, None, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(doc, dict):
            yield SourceDoc(number, None, f"a JSON object is needed, got {type(doc).__name__}")
            continue
        yield SourceDoc(number, doc)


def stable_id(doc: dict, line: int, id_field: str | None, source_name: str) -> str:
    """The document's own id when it has one, else one derived from the input's name and line: re-runs overwrite."""
    if id_field and doc.get(id_field) not in (None, ""):
        return str(doc[id_field])
    return hashlib.sha1(f"{source_name}\0{line}".encode()).hexdigest()[:20]


def get_path(doc: dict, dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def text_problem(value: Any) -> str | None:
    """Why a text field's value cannot be embedded, or None if it can."""
    if value is None:
        return "text field is missing or null"
    if not isinstance(value, str):
        return f"text field is a {type(value).__name__}, not a string"
    if not value.strip():
        return "text field is empty"
    return None


def clean_text(text: str) -> str:
    """Replace lone surrogates (invalid UTF-16 halves from some JSON) so the text can be encoded as UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8") if any(0xD800 <= ord(c) <= 0xDFFF for c in text) else text


class Checkpoint:
    """How many input records, in order, are safely acknowledged — what ``--resume`` skips.

    Written every ``every`` records and at the end; after a crash, resume re-sends at most that many records,
    which overwrite themselves (stable ids), so nothing is lost or duplicated.
    """

    def __init__(self, path: Path | None, every: int = 500) -> None:
        self.path = path
        self.every = every
        self.done = 0
        self._written = 0
        if path and path.is_file():
            self.done = self._written = int(json.loads(path.read_text()).get("done", 0))

    def advance(self, done: int) -> None:
        self.done = done
        if done - self._written >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.path and self.done != self._written:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"done": self.done}))
            tmp.replace(self.path)
            self._written = self.done

    def clear(self) -> None:
        if self.path:
            self.path.unlink(missing_ok=True)


def ingest(
    backend: Backend,
    index: str,
    records: Iterable[SourceDoc | dict],
    *,
    text_field: str = "text",
    vector_field: str = "embedding",
    embedder: Embedder | None = None,
    id_field: str | None = "id",
    source_name: str = "input",
    batch_size: int = 256,
    max_retries: int = 8,
    initial_backoff: float = 1.0,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
    pipeline: str | None = None,
    refresh: bool = False,
    chunker: Any = "auto",
    bulk_settings: bool = False,
    prefetch_depth: int = 2,
) -> IngestReport:
    """Index ``records`` into ``index``. With ``embedder`` (client mode) vectors are computed here.

    Rejections (HTTP 429) are retried with exponential backoff; a document the cluster refuses is reported with
    its id and reason; a lost connection stops the run with a clear error, and the checkpoint then holds exactly
    the input records that are safely stored, so ``resume`` re-sends the rest (stable ids: nothing duplicates).

    ``bulk_settings``: during the load the index runs with ``refresh_interval: -1`` and no replicas, and gets its
    previous values back afterwards, also when the run fails (see :func:`bulk_load_settings`).
    ``prefetch_depth``: client mode encodes up to this many batches ahead while the current one is sent (1: no
    overlap).
    """
    report = IngestReport()
    checkpoint = checkpoint or Checkpoint(None)
    if chunker == "auto":  # a chunked index (deployed with chunking) splits long documents into passages
        chunker = chunker_for_index(backend, index, embedder)
    builder = _ActionBuilder(index, text_field, vector_field, embedder, id_field, source_name, report, chunker)
    tracker = _Progress(checkpoint)

    def pending() -> Iterator[tuple[int, SourceDoc]]:
        for position, record in enumerate(records):
            if position < checkpoint.done:
                report.skipped += 1
                continue
            yield position, record if isinstance(record, SourceDoc) else SourceDoc(position + 1, record)

    def actions() -> Iterator[dict]:
        depth = prefetch_depth if embedder is not None else 1
        for batch in _prefetch(_chunks(pending(), batch_size, builder), depth=depth):
            for position, action in batch:
                if action is None:
                    tracker.acknowledge(position)  # unreadable record: reported, nothing to send
                    continue
                tracker.sent.append(position)
                yield action

    kwargs: dict[str, Any] = {
        "chunk_size": batch_size,
        "max_retries": max_retries,
        "initial_backoff": initial_backoff,
        "max_backoff": 60,
        "raise_on_error": False,
        "raise_on_exception": True,
        "yield_ok": True,
    }
    if pipeline:
        kwargs["pipeline"] = pipeline
    load_settings = bulk_load_settings(backend, index) if bulk_settings else contextlib.nullcontext()
    with backend.errors(), _flushing(checkpoint), load_settings:
        for ok, item in backend.streaming_bulk(actions(), **kwargs):
            info = next(iter(item.values()))
            position = tracker.next_sent()
            if ok:
                report.indexed += 1
                report.without_vector += position in builder.flagged
            else:
                report.failed += 1
                _note(report, Failure(str(info.get("_id")), None, _bulk_reason(info)))
            tracker.acknowledge(position)
            if progress:
                progress(1)
    if refresh:
        backend.refresh(index)
    return report


#: Index settings for a bulk load: no periodic refresh, no replicas to copy every document to while loading.
BULK_LOAD_SETTINGS: dict[str, str] = {"refresh_interval": "-1", "number_of_replicas": "0"}
BULK_LOAD_META_KEY = "bulk_load"  # the previous values, kept in _meta.e5plugin while a load runs


@contextlib.contextmanager
def bulk_load_settings(backend: Backend, index: str) -> Iterator[dict[str, str | None] | None]:
    """Run the block with :data:`BULK_LOAD_SETTINGS` on ``index``, then put the previous values back (also when the
    block raises). Yields the previous values, or None when the settings were left alone (no such index, or the
    credentials may write documents but not change settings).

    The previous values are first recorded in the index's ``_meta.e5plugin``: if the process dies mid-load, the next
    load (e.g. ``ingest --resume``) restores those recorded values instead of taking ``-1`` for the user's."""
    from .errors import PermissionDeniedError

    names = list(BULK_LOAD_SETTINGS)
    try:
        if not backend.index_exists(index):
            previous = None
        else:
            recorded = backend.index_meta(index).get(BULK_LOAD_META_KEY)
            previous = dict(recorded) if recorded else backend.index_settings(index, names)
            if not recorded:
                backend.update_index_meta(index, {BULK_LOAD_META_KEY: previous})
            backend.put_index_settings(index, BULK_LOAD_SETTINGS)
    except PermissionDeniedError:
        previous = None
    if previous is None:
        yield None
        return
    try:
        yield previous
    finally:
        backend.put_index_settings(index, previous)  # None: back to the default
        backend.update_index_meta(index, {BULK_LOAD_META_KEY: None})


@contextlib.contextmanager
def _flushing(checkpoint: Checkpoint) -> Iterator[None]:
    try:
        yield
    finally:
        checkpoint.flush()


class _ActionBuilder:
    """Turns input records into bulk actions; in client mode, embeds the batch's texts in one call."""

    def __init__(
        self,
        index: str,
        text_field: str,
        vector_field: str,
        embedder: Embedder | None,
        id_field: str | None,
        source_name: str,
        report: IngestReport,
        chunker: Any = None,
    ) -> None:
        self.index, self.text_field, self.vector_field = index, text_field, vector_field
        self.embedder, self.id_field, self.source_name, self.report = embedder, id_field, source_name, report
        self.flagged: set[int] = set()  # positions stored without a vector (marker set)
        self.chunker = chunker  # tasks.chunking.Chunker: long texts become nested passages

    def __call__(self, batch: list[tuple[int, SourceDoc]]) -> list[tuple[int, dict | None]]:
        out: list[tuple[int, dict | None]] = []
        to_embed: list[tuple[dict, str]] = []
        for position, src in batch:
            if src.doc is None:
                self.report.failed += 1
                _note(self.report, Failure(None, src.line, src.error or "unreadable record"))
                out.append((position, None))
                continue
            doc = dict(src.doc)
            value = get_path(doc, self.text_field)
            if isinstance(value, str):
                value = clean_text(value)
                _set_path(doc, self.text_field, value)
            action = {
                "_op_type": "index",
                "_index": self.index,
                "_id": src.doc_id or stable_id(doc, src.line, self.id_field, self.source_name),
                "_source": doc,
            }
            if self.chunker is not None and text_problem(value) is None:
                field = self.chunker.settings.field
                doc[field] = [p.to_source() for p in self.chunker(value)]
                if self.embedder is not None:
                    leaf = self.chunker.vector_field
                    to_embed += [(passage, passage["text"], leaf) for passage in doc[field]]
            elif self.embedder is not None:
                problem = text_problem(value)
                if problem:
                    doc[ERROR_FIELD] = {"reason": problem, "processor": "e5plugin-client"}
                    self.flagged.add(position)
                else:
                    to_embed.append((doc, value, self.vector_field))
            out.append((position, action))
        if to_embed:
            vectors = self.embedder.encode_passages([text for _, text, _ in to_embed])  # type: ignore[union-attr]
            for (target, _, path), vector in zip(to_embed, vectors, strict=True):
                _set_path(target, path, vector.tolist())
        return out


class _Progress:
    """Tracks which input positions are acknowledged and advances the checkpoint over the contiguous prefix."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.sent: deque[int] = deque()  # positions sent and not yet acknowledged (bounded by the bulk window)
        self._done: set[int] = set()

    def next_sent(self) -> int:
        return self.sent.popleft()

    def acknowledge(self, position: int) -> None:
        self._done.add(position)
        done = self.checkpoint.done
        while done in self._done:
            self._done.discard(done)
            done += 1
        if done != self.checkpoint.done:
            self.checkpoint.advance(done)


def chunker_for_index(backend: Backend, index: str, embedder: Embedder | None = None) -> Any:
    """The passage splitter of a chunked index (its ``_meta.e5plugin.chunking``), else None."""
    from .tasks.chunking import Chunker, ChunkingSettings

    if not backend.index_exists(index):
        return None
    meta = backend.index_meta(index)
    settings = ChunkingSettings.from_dict(meta.get("chunking"))
    if settings is None:
        return None
    from .models import ModelSpec
    from .prefixes import PrefixPlan

    spec = ModelSpec(**meta["model"])
    tokenizer = embedder.model.tokenizer if embedder is not None else None
    prefix = PrefixPlan.from_dict(meta["prefixes"]).passage_prefix
    leaf = meta["vector_field"][len(settings.field) + 1 :]  # the vector inside each passage
    return Chunker(spec, settings, prefix, tokenizer, vector_field=leaf)


def _chunks(
    items: Iterator[tuple[int, SourceDoc]], size: int, build: Callable[[list], list]
) -> Iterator[list[tuple[int, dict | None]]]:
    batch: list[tuple[int, SourceDoc]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield build(batch)
            batch = []
    if batch:
        yield build(batch)


def _note(report: IngestReport, failure: Failure) -> None:
    if len(report.failures) < MAX_REPORTED_FAILURES:
        report.failures.append(failure)


def _bulk_reason(info: dict) -> str:
    error = info.get("error") or info.get("exception") or info.get("status")
    if isinstance(error, dict):
        caused = error.get("caused_by", {})
        reason = f"{error.get('type')}: {error.get('reason')}"
        return reason + (f" (caused by {caused.get('type')}: {caused.get('reason')})" if caused else "")
    return str(error)


def _set_path(doc: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


_DONE = object()


def _prefetch(source: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``source`` in a thread, ``depth`` items ahead: the next batch is encoded while this one is sent."""
    if depth <= 1:
        yield from source
        return
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="e5plugin-encode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def open_input(path: str) -> tuple[IO[str], str]:
    """A text stream and a stable source name; ``-`` is stdin."""
    if path == "-":
        import sys

        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"), "stdin"
    resolved = Path(path)
    return resolved.open(encoding="utf-8", errors="replace", newline=""), resolved.name
