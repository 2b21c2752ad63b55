"""Streaming bulk ingest: stable ids, retries with backoff on 429, a per-document failure report, resume.

Server mode sends documents as they are (the index's default pipeline embeds them). Client mode embeds locally
and sends the vectors; encoding of the next batch overlaps with the bulk request of the current one.

Input files are read as bytes: UTF-8 (a leading BOM is ignored), one record per line (JSON Lines) or per row
(CSV, TSV). A line that is not valid UTF-8 is a failure of that record in the report, never silently altered.
What identifies a record is said by :func:`stable_id`; what ``--resume`` trusts, by :class:`Checkpoint`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .bodies import ERROR_FIELD
from .embed import Embedder
from .engines.base import Backend
from .errors import ConfigurationError

MAX_REPORTED_FAILURES = 10_000
#: The longest CSV/TSV field read (characters). Python's default (131,072) is less than many documents; this bound
#: only stops an unbalanced quote from reading the rest of a huge file into one field (engines refuse a request over
#: 100 MB by default anyway).
CSV_FIELD_LIMIT = 100 * 1024 * 1024
#: Input formats by file suffix (any case); anything else, and stdin, is JSON Lines.
FORMATS_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_BOM = b"\xef\xbb\xbf"


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


@dataclass(frozen=True)
class InputMark:
    """Where a record ends in its input: the bytes read up to its end, and the SHA-256 of those bytes."""

    offset: int
    sha256: str

    def to_dict(self) -> dict:
        return {"offset": self.offset, "sha256": self.sha256}


@dataclass
class SourceDoc:
    """One input record: its position in the input, and the document or why it could not be read."""

    line: int
    doc: dict | None
    error: str | None = None
    doc_id: str | None = None  # an existing document's id (backfill); else derived by stable_id
    mark: InputMark | None = None  # where the record ends in the input file or stream (what a checkpoint checks)
    #: optimistic concurrency (backfill): ``{"if_seq_no": n, "if_primary_term": m}`` as read; a concurrent edit wins
    write_if: dict | None = None


def input_format(name: str) -> str:
    """``csv``, ``tsv`` or ``jsonl``, from the file name's suffix in any case (stdin, ``-``: JSON Lines)."""
    return FORMATS_BY_SUFFIX.get(Path(name).suffix.lower(), "jsonl") if name != "-" else "jsonl"


class _Lines:
    """An input's lines as bytes, with the byte count and SHA-256 of everything read so far."""

    def __init__(self, stream: IO[bytes] | IO[str]) -> None:
        self.stream = stream
        self.offset = 0
        self.hash = hashlib.sha256()
        self.number = 0

    def __iter__(self) -> Iterator[bytes]:
        first = True
        for raw in self.stream:
            data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
            self.offset += len(data)
            self.hash.update(data)
            self.number += 1
            if first and data.startswith(_BOM):
                data = data[len(_BOM) :]
            first = False
            yield data

    def mark(self) -> InputMark:
        return InputMark(self.offset, self.hash.hexdigest())


def _decode(data: bytes) -> tuple[str, str | None]:
    """The line as text, and why it is not valid UTF-8 (None when it is)."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        problem = f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte {exc.start + 1} of the line"
        return data.decode("utf-8", "replace"), problem + " (save the file as UTF-8)"


def read_documents(stream: IO[bytes] | IO[str], fmt: str = "jsonl") -> Iterator[SourceDoc]:
    """JSON Lines, CSV or TSV records (``fmt``); unreadable rows become errors in the report, not exceptions.

    ``stream`` is best binary (:func:`open_input`): each record then carries its :class:`InputMark`, and a line
    that is not UTF-8 is reported instead of decoded with replacement characters."""
    lines = _Lines(stream)
    if fmt in ("csv", "tsv"):
        yield from _read_table(lines, "\t" if fmt == "tsv" else ",")
        return
    if fmt != "jsonl":
        raise ConfigurationError(f"Input format must be jsonl, csv or tsv, not {fmt!r}.")
    for data in lines:
        text, problem = _decode(data)
        if problem:
            yield SourceDoc(lines.number, None, problem, mark=lines.mark())
            continue
        if not text.strip():
            continue
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            yield SourceDoc(lines.number, None, f"invalid JSON: {exc.msg} at column {exc.colno}", mark=lines.mark())
            continue
        if not isinstance(doc, dict):
            problem = f"a JSON object is needed, got {type(doc).__name__}"
            yield SourceDoc(lines.number, None, problem, mark=lines.mark())
            continue
        yield SourceDoc(lines.number, doc, mark=lines.mark())


def _read_table(lines: _Lines, delimiter: str) -> Iterator[SourceDoc]:
    """CSV/TSV rows as documents keyed by the header row; a row the parser or decoder refuses is a failure."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    problems: list[str] = []  # UTF-8 problems of the lines the current row spans

    def text_lines() -> Iterator[str]:
        for data in lines:
            text, problem = _decode(data)
            if problem:
                problems.append(f"line {lines.number}: {problem}")
            yield text

    reader = csv.reader(text_lines(), delimiter=delimiter)
    header: list[str] | None = None
    while True:
        start = lines.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.clear()
            yield SourceDoc(start, None, f"unreadable {'TSV' if delimiter == chr(9) else 'CSV'} row: {exc}")
            continue
        found, problems[:] = list(problems), []
        if header is None:
            header = row
            if found:
                yield SourceDoc(start, None, "header row " + "; ".join(found), mark=lines.mark())
            continue
        if not row:  # a blank line
            continue
        if found:
            yield SourceDoc(start, None, "; ".join(found), mark=lines.mark())
        elif len(row) > len(header):
            problem = f"the row has {len(row)} fields, the header {len(header)}"
            yield SourceDoc(start, None, problem, mark=lines.mark())
        else:
            yield SourceDoc(
                start, dict(zip(header, row + [None] * (len(header) - len(row)), strict=True)), mark=lines.mark()
            )


def stable_id(doc: dict, id_field: str | None = "id") -> str:
    """What identifies a record: its ``id_field`` when set and not empty, else its content.

    A record without an id gets the SHA-256 (first 32 hex digits) of its JSON with sorted keys, so the same record
    gets the same id from any file, folder, stdin, ``faq index`` or ``rollout --source``: re-ingesting overwrites
    it instead of duplicating it, and a moved or renamed file needs no care. The consequences, chosen on purpose:
    two identical records (same fields, same values) are one document, and an edited record is a new document
    (the old version stays): records that change over time need an id field.
    """
    if id_field and doc.get(id_field) not in (None, ""):
        return str(doc[id_field])
    canonical = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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
    """What ``--resume`` skips: the longest run of input records, from the first, that are all safely stored.

    A record that failed (refused by the engine, unreadable) stops the run: resume sends it again, and everything
    after it (stable ids: those overwrite themselves). The checkpoint is tied to its input by the
    :class:`InputMark` of its last record (bytes read and their SHA-256): resuming on an input whose beginning
    differs (regenerated, shorter, another stdin stream) is refused, naming the checkpoint file. Written every
    ``every`` records and when the run ends or stops; ``load=False`` starts over (an unreadable file is then simply
    replaced). :meth:`locked` keeps two runs from sharing one checkpoint file.
    """

    VERSION = 2

    def __init__(self, path: Path | None, every: int = 500, *, load: bool = True, about: dict | None = None) -> None:
        self.path = path
        self.every = every
        self.about = about or {}  # what the input was (name, size, mtime): shown when a resume is refused
        self.done = 0
        self.mark: InputMark | None = None
        self.recorded: dict = {}
        self._written = 0
        if load and path and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.done = self._written = int(data["done"])
            mark = data.get("mark")
            self.mark = InputMark(int(mark["offset"]), str(mark["sha256"])) if mark else None
            self.recorded = dict(data.get("about") or {})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"The checkpoint {path} cannot be read ({exc}); run without --resume to start over (re-sent "
                "records overwrite themselves), or delete the file."
            ) from exc

    def advance(self, done: int, mark: InputMark | None = None) -> None:
        self.done, self.mark = done, mark
        if done - self._written >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.path and self.done != self._written:
            data = {"version": self.VERSION, "done": self.done, "mark": self.mark and self.mark.to_dict()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({**data, "about": self.about}))
            tmp.replace(self.path)
            self._written = self.done

    def clear(self) -> None:
        if self.path:
            self.path.unlink(missing_ok=True)

    def verify(self, mark: InputMark | None) -> None:
        """Refuse to skip records unless ``mark`` (the input's record number ``done``) matches the recorded one."""
        if self.mark is None and mark is None:
            return  # records without marks (from code, not a file): the caller vouches for the input
        if self.mark is None:
            self.refuse("it holds a bare count of {done} records, no fingerprint of the input")
        if mark != self.mark:
            self.refuse("its first {done} records differ from the ones stored")

    def refuse(self, why: str) -> None:
        was = ", ".join(f"{k} {v}" for k, v in self.recorded.items() if v is not None)
        raise ConfigurationError(
            f"The checkpoint {self.path} does not match this input: {why.format(done=self.done)}"
            + (f" (it was written for {was})" if was else "")
            + ". Run without --resume to start over (re-sent records overwrite themselves), or delete the file."
        )

    @contextlib.contextmanager
    def locked(self, what: str = "this input") -> Iterator[Checkpoint]:
        """Hold the checkpoint for this run; another run holding it is refused with a clear error."""
        if self.path is None:
            yield self
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_suffix(".lock")
        with lock.open("a") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: no advisory locks here
                yield self
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigurationError(
                    f"There is another ingest of {what} running (it holds {lock}); wait for it to finish: "
                    "two runs of one input into one index would overwrite each other's checkpoint."
                ) from None
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def checkpoint_path(index: str, source: str) -> Path:
    """Where ``ingest --resume`` keeps its checkpoint for ``source`` (a file, or ``-`` for stdin) into ``index``:
    one per index and input file (by its absolute path) under the cache folder (``E5PLUGIN_CACHE``)."""
    from .devcluster import default_cache_dir

    where = "stdin" if source == "-" else str(Path(source).resolve())
    key = hashlib.sha1(f"{index}\0{where}".encode()).hexdigest()
    return default_cache_dir() / "checkpoints" / f"{index}-{key[:12]}.json"


def input_about(source: str) -> dict:
    """What a checkpoint records about its input, for the message when a resume is refused."""
    if source == "-":
        return {"input": "stdin"}
    path = Path(source)
    stat = path.stat()
    return {"input": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


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

    ``source_name`` names the input for callers' messages; ids do not depend on it (:func:`stable_id`).
    ``checkpoint``: advanced over the longest run of records from the first that are all stored (acknowledged by
    id, so a 429-retried document is never covered before it is stored; a failed one stops it), and verified
    against the records' :class:`InputMark` before anything is skipped.

    ``bulk_settings``: during the load the index runs with ``refresh_interval: -1`` and no replicas, and gets its
    previous values back afterwards, also when the run fails (see :func:`bulk_load_settings`).
    ``prefetch_depth``: client mode encodes up to this many batches ahead while the current one is sent (1: no
    overlap).
    """
    report = IngestReport()
    checkpoint = checkpoint or Checkpoint(None)
    if chunker == "auto":  # a chunked index (deployed with chunking) splits long documents into passages
        chunker = chunker_for_index(backend, index, embedder)
    if embedder is not None and backend.index_exists(index):
        from .search import record_embed_backend  # queries are embedded by the backend that embedded the documents

        record_embed_backend(backend, index, embedder)
    builder = _ActionBuilder(index, text_field, vector_field, embedder, id_field, report, chunker)
    tracker = _Progress(checkpoint)

    def pending() -> Iterator[tuple[int, SourceDoc]]:
        count = 0
        for position, record in enumerate(records):
            count = position + 1
            src = record if isinstance(record, SourceDoc) else SourceDoc(position + 1, record)
            if position < checkpoint.done:
                report.skipped += 1
                if count == checkpoint.done:  # the last record the checkpoint covers: is it the same input?
                    checkpoint.verify(src.mark)
                continue
            tracker.read(position, src)
            yield position, src
        if count < checkpoint.done:
            checkpoint.refuse(f"the input ends after {count} records")

    def actions() -> Iterator[dict]:
        depth = prefetch_depth if embedder is not None else 1
        for batch in _prefetch(_chunks(pending(), batch_size, builder), depth=depth):
            for position, action in batch:
                if action is None:
                    tracker.acknowledge(position, ok=False)  # unreadable record: reported, nothing to send
                    continue
                tracker.sent(position, action["_id"])
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
    # server mode: read the markers back; a document counts as stored for the checkpoint only after that
    marks = PipelineMarks(backend, index, report, active=embedder is None, acknowledge=tracker.acknowledge)
    with backend.errors(), _flushing(checkpoint), load_settings:
        for ok, item in backend.streaming_bulk(actions(), **kwargs):
            info = next(iter(item.values()))
            position = tracker.answered(str(info.get("_id")))  # by id: retried items come back after the rest
            if ok:
                report.indexed += 1
                report.without_vector += position in builder.flagged
                marks.stored(str(info.get("_id")), tracker.line(position), position)  # acknowledges it
            else:
                report.failed += 1
                _note(report, Failure(str(info.get("_id")), tracker.line(position), _bulk_reason(info)))
                tracker.acknowledge(position, False)
            if progress:
                progress(1)
        marks.check()
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
        report: IngestReport,
        chunker: Any = None,
    ) -> None:
        self.index, self.text_field, self.vector_field = index, text_field, vector_field
        self.embedder, self.id_field, self.report = embedder, id_field, report
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
                "_id": src.doc_id or stable_id(src.doc, self.id_field),
                "_source": doc,
            }
            action.update(src.write_if or {})
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
    """Which input positions are stored, matched by document id (not by arrival order: ``streaming_bulk`` yields
    429-retried items after the rest of their chunk), and the checkpoint over the longest run of positions from the
    first that are all stored. A failed position stops that run for good: resume must send it again."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._read: dict[int, tuple[int, InputMark | None]] = {}  # position -> (line, mark), until passed
        self._inflight: dict[str, deque[int]] = {}  # id -> positions sent and not yet answered (bulk window)
        self._done: set[int] = set()  # stored positions past the checkpoint
        self.failed_at: int | None = None

    def read(self, position: int, src: SourceDoc) -> None:
        self._read[position] = (src.line, src.mark)

    def sent(self, position: int, doc_id: str) -> None:
        self._inflight.setdefault(doc_id, deque()).append(position)

    def answered(self, doc_id: str) -> int:
        """The position an answer for ``doc_id`` belongs to (one id sent twice: in the order sent)."""
        if doc_id not in self._inflight:  # an answer without a known id: the oldest document in flight
            doc_id = min(self._inflight, key=lambda key: self._inflight[key][0])
        waiting = self._inflight[doc_id]
        position = waiting.popleft()
        if not waiting:
            del self._inflight[doc_id]
        return position

    def line(self, position: int) -> int | None:
        return self._read.get(position, (None, None))[0]

    def acknowledge(self, position: int, ok: bool = True) -> None:
        if not ok and (self.failed_at is None or position < self.failed_at):
            self.failed_at = position
        if ok and (self.failed_at is None or position < self.failed_at):
            self._done.add(position)
        else:
            self._read.pop(position, None)  # at or after a failure: never covered by this run's checkpoint
        done, mark = self.checkpoint.done, None
        while done in self._done:
            self._done.discard(done)
            mark = self._read.pop(done, (None, None))[1]
            done += 1
        if done != self.checkpoint.done:
            self.checkpoint.advance(done, mark)


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


def open_input(path: str) -> tuple[IO[bytes], str]:
    """A binary stream for :func:`read_documents` and the input's name; ``-`` is stdin.

    A missing, unreadable or directory path is a :class:`ConfigurationError` naming it (check inputs before
    loading a model)."""
    if path == "-":
        return sys.stdin.buffer, "stdin"
    resolved = Path(path)
    if resolved.is_dir():
        raise ConfigurationError(f"Input {path!r} is a directory: give a JSON Lines, CSV or TSV file (or - for stdin).")
    try:
        return resolved.open("rb"), resolved.name
    except FileNotFoundError:
        raise ConfigurationError(f"Input file {path!r} does not exist.") from None
    except OSError as exc:
        raise ConfigurationError(f"Input file {path!r} cannot be read: {exc.strerror}.") from None


class PipelineMarks:
    """Server mode: an ingest pipeline keeps a document whose embedding failed (model not deployed, not ready, ...)
    and marks it with ``ERROR_FIELD``, and the bulk answer still says "created". The stored documents are read
    back in batches (``mget``, real time, only the marker) and those the *model* failed on move from indexed to
    failed, with id, line and reason (a missing text stays a without-vector document, as in client mode).
    ``acknowledge(position, ok)`` is called for each stored input position once its fate is known (at once when
    not ``active``): a document the model failed on must not be covered by the ``--resume`` checkpoint."""

    def __init__(
        self,
        backend: Backend,
        index: str,
        report: IngestReport,
        *,
        active: bool,
        batch: int = 500,
        acknowledge: Callable[[int, bool], None] | None = None,
    ):
        self.backend, self.index, self.report, self.active, self.batch = backend, index, report, active, batch
        self.pending: dict[str, int | None] = {}
        self.acknowledge = acknowledge
        self.positions: list[tuple[str, int]] = []  # (id, input position) waiting for the check

    def stored(self, doc_id: str, line: int | None, position: int | None = None) -> None:
        if not self.active:
            if self.acknowledge is not None and position is not None:
                self.acknowledge(position, True)
            return
        self.pending[doc_id] = line
        if position is not None:
            self.positions.append((doc_id, position))
        if len(self.pending) >= self.batch:
            self.check()

    def check(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        positions, self.positions = self.positions, []
        failed = self.backend.embedding_failures(self.index, list(pending))
        for doc_id, reason in failed.items():
            self.report.indexed -= 1
            self.report.failed += 1
            _note(self.report, Failure(doc_id, pending.get(doc_id), reason))
        if self.acknowledge is not None:
            for doc_id, position in positions:
                self.acknowledge(position, doc_id not in failed)
