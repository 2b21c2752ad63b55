"""Ingest's promises, tested the way a user trips over them, against a real Elasticsearch node (issue 12, defects 1,
2, 3 and 13): generated ids, ``--resume`` checkpoints, acknowledgement under 429 retries, input files and the
errors of missing inputs and indices."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.errors import ConfigurationError, IngestFailedError
from e5plugin.ingest import Checkpoint, checkpoint_path, ingest, open_input, read_documents

pytestmark = pytest.mark.elasticsearch


@pytest.fixture(autouse=True)
def _own_checkpoints(tmp_path, monkeypatch):
    """Checkpoints of these tests live in the test's folder, never in the user's cache."""
    monkeypatch.setenv("E5PLUGIN_CACHE", str(tmp_path / "cache"))


def run(url: str, *args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, ["--url", url, *args], input=input, catch_exceptions=False)


def _deploy(url: str, model: Path, index: str) -> None:
    result = run(url, "deploy", "-m", str(model), "-i", index, "--replicas", "0", "--mode", "client")
    assert result.exit_code == 0, result.output


def _lines(docs: list[dict]) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


@pytest.fixture
def index(elasticsearch, es_backend, tiny_e5_bert, index_name) -> Iterator[str]:
    es_backend.delete_index(index_name)
    _deploy(elasticsearch.url, tiny_e5_bert, index_name)
    yield index_name
    es_backend.delete_index(index_name)


def _count(backend, index: str) -> int:
    backend.refresh(index)
    return backend.count(index)


# ---- defect 1: generated ids ----------------------------------------------------------------------------------
def test_same_file_name_in_two_folders_and_two_stdin_streams_keep_every_record(
    elasticsearch, es_backend, index, tmp_path
):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "p.jsonl").write_text(_lines([{"text": f"{folder} record {i}"} for i in range(50)]))
    for folder in ("a", "b"):
        result = run(elasticsearch.url, "ingest", str(tmp_path / folder / "p.jsonl"), "--index", index)
        assert result.exit_code == 0, result.output
    assert _count(es_backend, index) == 100
    again = run(elasticsearch.url, "ingest", str(tmp_path / "a" / "p.jsonl"), "--index", index)
    assert again.exit_code == 0 and _count(es_backend, index) == 100  # the same records again: overwritten
    for batch in ("first", "second"):
        piped = run(elasticsearch.url, "ingest", "-", "--index", index, input=_lines([{"text": f"{batch} stream"}]))
        assert piped.exit_code == 0, piped.output
    assert _count(es_backend, index) == 102


# ---- defect 2: --resume ---------------------------------------------------------------------------------------
def _interrupt_after(path: Path, n: int) -> Iterator:
    """The file's records as the CLI reads them, with a Ctrl-C after ``n`` of them."""
    stream, _ = open_input(str(path))
    with stream:
        for count, record in enumerate(read_documents(stream), start=1):
            if count > n:
                raise KeyboardInterrupt
            yield record


def _interrupted_ingest(backend, index: str, path: Path, n: int) -> Checkpoint:
    from e5plugin.embed import Embedder
    from e5plugin.search import SemanticSearch

    setup = SemanticSearch.for_index(index, backend=backend).setup
    checkpoint = Checkpoint(checkpoint_path(index, str(path)), every=10)
    with pytest.raises(KeyboardInterrupt):
        ingest(
            backend,
            index,
            _interrupt_after(path, n),
            embedder=Embedder(setup.spec, plan=setup.plan),
            batch_size=20,
            checkpoint=checkpoint,
        )
    assert 0 < Checkpoint(checkpoint.path).done <= n  # the batch being read when Ctrl-C came was never sent
    return checkpoint


def test_resume_refuses_an_input_that_changed_under_the_checkpoint(elasticsearch, es_backend, index, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(_lines([{"text": f"old record {i}"} for i in range(100)]))
    checkpoint = _interrupted_ingest(es_backend, index, path, 60)
    path.write_text(_lines([{"text": f"regenerated record {i}"} for i in range(80)]))  # another export, same name
    refused = run(elasticsearch.url, "ingest", str(path), "--index", index, "--resume")
    assert refused.exit_code == ConfigurationError.exit_code, refused.output
    assert str(checkpoint.path) in refused.output and "without --resume" in refused.output
    path.write_text(_lines([{"text": f"old record {i}"} for i in range(30)]))  # shorter than what was done
    shorter = run(elasticsearch.url, "ingest", str(path), "--index", index, "--resume")
    assert shorter.exit_code == ConfigurationError.exit_code and str(checkpoint.path) in shorter.output
    fresh = run(elasticsearch.url, "ingest", str(path), "--index", index)  # the way out the error names
    assert fresh.exit_code == 0, fresh.output


def test_resume_on_another_stdin_stream_is_refused(elasticsearch, es_backend, index):
    good = _lines([{"text": f"streamed {i}"} for i in range(40)])
    first = run(elasticsearch.url, "ingest", "-", "--index", index, input=good + "{not json\n")
    assert first.exit_code == IngestFailedError.exit_code  # 40 stored, the last line failed: a checkpoint stays
    other = _lines([{"text": f"another stream {i}"} for i in range(40)])
    refused = run(elasticsearch.url, "ingest", "-", "--index", index, "--resume", input=other + other)
    assert refused.exit_code == ConfigurationError.exit_code and "without --resume" in refused.output, refused.output
    assert _count(es_backend, index) == 40
    fixed = run(elasticsearch.url, "ingest", "-", "--index", index, "--resume", input=good + '{"text": "fixed"}\n')
    assert fixed.exit_code == 0 and "skipped (resumed) 40" in fixed.output, fixed.output
    assert _count(es_backend, index) == 41


def test_resume_after_failed_rows_sends_them_again(elasticsearch, es_backend, index, tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": f"row {i}", "n": i} for i in range(30)]
    rows[10] = {"text": "row 10", "n": "not a number"}  # the first row maps n as a long: the engine refuses this one
    path.write_text(_lines(rows))
    first = run(elasticsearch.url, "ingest", str(path), "--index", index)
    assert first.exit_code == IngestFailedError.exit_code and "failed 1" in first.output, first.output
    assert _count(es_backend, index) == 29
    rows[10] = {"text": "row 10", "n": 10}  # the user fixes the row the report named
    path.write_text(_lines(rows))
    resumed = run(elasticsearch.url, "ingest", str(path), "--index", index, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "skipped (resumed) 10" in resumed.output  # everything before the failed row, nothing after it
    assert _count(es_backend, index) == 30


def test_a_corrupt_checkpoint_does_not_block_a_fresh_ingest(elasticsearch, es_backend, index, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(_lines([{"text": f"doc {i}"} for i in range(5)]))
    ckpt = checkpoint_path(index, str(path))
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_text('{"done": 3, "trunc')  # a crash mid-write on a full disk, say
    resumed = run(elasticsearch.url, "ingest", str(path), "--index", index, "--resume")
    assert resumed.exit_code == ConfigurationError.exit_code and str(ckpt) in resumed.output
    fresh = run(elasticsearch.url, "ingest", str(path), "--index", index)
    assert fresh.exit_code == 0, fresh.output
    assert _count(es_backend, index) == 5 and not ckpt.exists()


def test_concurrent_ingests_of_one_input_never_share_a_checkpoint(elasticsearch, es_backend, index, tmp_path):
    """A real second process holds stdin open mid-ingest; a second run into the same index is refused (its resume
    state would be overwritten), one into another index goes ahead with its own checkpoint."""
    other = index + "-other"
    es_backend.delete_index(other)
    _deploy(elasticsearch.url, Path(es_backend.index_meta(index)["model"]["local_path"]), other)
    assert checkpoint_path(index, "-") != checkpoint_path(other, "-")
    code = "import sys; from e5plugin.cli import cli; sys.exit(cli.main(standalone_mode=False) or 0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--url", elasticsearch.url, "ingest", "-", "--index", index],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        process.stdin.write(b'{"text": "written by the first process"}\n')
        process.stdin.flush()
        lock = checkpoint_path(index, "-").with_suffix(".lock")
        deadline = time.monotonic() + 120
        while not _is_locked(lock):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the first ingest never held a checkpoint: " + process.communicate()[0].decode())
            time.sleep(0.2)
        same = run(elasticsearch.url, "ingest", "-", "--index", index, input=_lines([{"text": "second"}]))
        assert same.exit_code == ConfigurationError.exit_code and "another ingest" in same.output, same.output
        elsewhere = run(elasticsearch.url, "ingest", "-", "--index", other, input=_lines([{"text": "second"}]))
        assert elsewhere.exit_code == 0, elsewhere.output
    finally:
        output = process.communicate(timeout=120)[0].decode()  # closes stdin: the first run ends
        es_backend.delete_index(other)
    assert process.returncode == 0, output
    assert _count(es_backend, index) == 1


def _is_locked(path: Path) -> bool:
    import fcntl

    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


# ---- defect 3: acknowledgement under 429 retries --------------------------------------------------------------
class _RejectingProxy(ThreadingHTTPServer):
    """A real HTTP hop in front of the node. The first ``_bulk`` has the items whose ids are in ``reject`` answered
    429 (not forwarded, as a node with a full write queue answers), everything else goes to the node; every later
    ``_bulk`` finds its connection reset: the node went away while the client was backing off."""

    daemon_threads = True

    def __init__(self, target: str, reject: set[str]) -> None:
        self.target = urlsplit(target)
        self.reject = reject
        self.bulks = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # resets are the point; no tracebacks
        pass


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _RejectingProxy

    def log_message(self, *args) -> None:
        pass

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rejected: list[dict] = []
        if "_bulk" in self.path:
            self.server.bulks += 1
            if self.server.bulks > 1:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                raise ConnectionResetError("reset by the test proxy")
            body, rejected = _split_bulk(body, self.server.reject)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "host", "connection")}
        upstream = http.client.HTTPConnection(self.server.target.hostname, self.server.target.port, timeout=60)
        upstream.request(self.command, self.path, body=body if body else None, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        if rejected:
            data = _merge_bulk(json.loads(data), rejected)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay


def _split_bulk(body: bytes, reject: set[str]) -> tuple[bytes, list[dict]]:
    """The bulk body without the rejected items, and a placeholder (with its position) for each of them."""
    lines = body.splitlines()
    kept: list[bytes] = []
    slots: list[dict] = []
    for position in range(0, len(lines), 2):
        action = json.loads(lines[position])
        meta = next(iter(action.values()))
        if meta.get("_id") in reject:
            slots.append({"position": position // 2, "index": meta.get("_index"), "id": meta["_id"]})
        else:
            kept += lines[position : position + 2]
    return b"\n".join(kept) + b"\n", slots


def _merge_bulk(response: dict, rejected: list[dict]) -> bytes:
    items = list(response["items"])
    for slot in rejected:
        error = {"type": "es_rejected_execution_exception", "reason": "rejected execution (queue capacity 1)"}
        items.insert(
            slot["position"], {"index": {"_index": slot["index"], "_id": slot["id"], "status": 429, "error": error}}
        )
    return json.dumps({**response, "errors": True, "items": items}).encode()


def test_a_retried_document_is_never_covered_by_the_checkpoint(elasticsearch, es_backend, index, tmp_path):
    from e5plugin.config import ConnectionConfig
    from e5plugin.embed import Embedder
    from e5plugin.engines import connect
    from e5plugin.errors import ClusterUnreachableError
    from e5plugin.search import SemanticSearch

    setup = SemanticSearch.for_index(index, backend=es_backend).setup
    embedder = Embedder(setup.spec, plan=setup.plan)
    docs = [{"id": f"d{i}", "text": f"document {i}"} for i in range(30)]
    proxy = _RejectingProxy(elasticsearch.url, reject={"d1", "d2"})
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        through = connect(ConnectionConfig(urls=[proxy.url], max_retries=0, request_timeout=10), engine="elasticsearch")
        checkpoint = Checkpoint(tmp_path / "ckpt.json", every=1)
        with pytest.raises(ClusterUnreachableError):
            ingest(through, index, docs, embedder=embedder, batch_size=10, initial_backoff=0.1, checkpoint=checkpoint)
    finally:
        proxy.shutdown()
        proxy.server_close()
    es_backend.refresh(index)
    stored = {d["id"] for d in docs if es_backend.get_document(index, d["id"]) is not None}
    assert stored == {"d0", *(f"d{i}" for i in range(3, 10))}  # the first bulk, less the two rejected items
    done = Checkpoint(checkpoint.path).done
    assert all(f"d{i}" in stored for i in range(done)), f"checkpoint covers {done} records, d1 is not stored"
    resumed = ingest(es_backend, index, docs, embedder=embedder, batch_size=10, checkpoint=Checkpoint(checkpoint.path))
    assert resumed.ok and _count(es_backend, index) == 30


# ---- defect 13: input files and missing things ----------------------------------------------------------------
def test_csv_tsv_bom_huge_fields_and_bad_bytes_through_the_cli(elasticsearch, es_backend, index, tmp_path):
    upper = tmp_path / "EXPORT.CSV"
    upper.write_bytes("\ufeffid,text\r\n1,from excel\r\n".encode() + b'2,"' + b"long " * 40_000 + b'"\r\n')
    result = run(elasticsearch.url, "ingest", str(upper), "--index", index)
    assert result.exit_code == 0, result.output
    assert es_backend.get_document(index, "1")["text"] == "from excel"
    assert len(es_backend.get_document(index, "2")["text"]) == 200_000
    tsv = tmp_path / "rows.tsv"
    tsv.write_bytes(b"id\ttext\n3\tone, two\n4\tcaf\xe9 latin-1\n5\tthree\n")
    result = run(elasticsearch.url, "ingest", str(tsv), "--index", index)
    assert result.exit_code == IngestFailedError.exit_code, result.output
    assert "line 3" in result.output and "UTF-8" in result.output
    assert es_backend.get_document(index, "3")["text"] == "one, two" and es_backend.get_document(index, "5")
    assert es_backend.get_document(index, "4") is None


def test_a_missing_input_file_is_exit_2_before_the_model_loads(elasticsearch, index, tmp_path, monkeypatch):
    from e5plugin import embed

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(embed.Embedder, "__init__", no_model)
    result = run(elasticsearch.url, "ingest", str(tmp_path / "missing.jsonl"), "--index", index)
    assert result.exit_code == ConfigurationError.exit_code, result.output
    assert "missing.jsonl" in result.output and "unexpected" not in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["search", "anything", "--index", "{index}"],
        ["reindex", "--index", "{index}"],
        ["faq", "ask", "anything", "--index", "{index}"],
        ["dedup", "--index", "{index}"],
        ["ingest", "{file}", "--index", "{index}"],
    ],
    ids=lambda c: c[0],
)
def test_a_missing_index_is_exit_2_and_named(elasticsearch, tmp_path, command):
    missing = "no-such-index-e5plugin-test"
    source = tmp_path / "docs.jsonl"
    source.write_text(_lines([{"text": "x"}]))
    args = [a.format(index=missing, file=source) for a in command]
    result = run(elasticsearch.url, *args)
    assert result.exit_code == ConfigurationError.exit_code, result.output
    assert missing in result.output and "unexpected" not in result.output


def test_engine_400s_and_k_0_get_their_own_clear_errors(elasticsearch, es_backend, index):
    from e5plugin.errors import RequestRejectedError

    assert run(elasticsearch.url, "ingest", "-", "--index", index, input=_lines([{"text": "x", "n": 1}])).exit_code == 0
    bad_filter = run(elasticsearch.url, "search", "x", "--index", index, "--filter", "n=not-a-number")
    assert bad_filter.exit_code == RequestRejectedError.exit_code, bad_filter.output
    assert "400" in bad_filter.output and "unexpected" not in bad_filter.output
    zero = run(elasticsearch.url, "search", "x", "--index", index, "-k", "0")
    assert zero.exit_code == ConfigurationError.exit_code and "unexpected" not in zero.output, zero.output


@pytest.mark.opensearch
def test_opensearch_missing_index_and_400_are_mapped_too(opensearch, os_backend, index_name):
    missing = run(opensearch.url, "search", "anything", "--index", "no-such-index-e5plugin-test")
    assert missing.exit_code == ConfigurationError.exit_code, missing.output
    assert "no-such-index-e5plugin-test" in missing.output and "unexpected" not in missing.output
    from e5plugin.errors import RequestRejectedError

    os_backend.delete_index(index_name)
    os_backend.client.indices.create(index=index_name, body={"mappings": {"properties": {"n": {"type": "long"}}}})
    try:
        with pytest.raises(RequestRejectedError, match=r"OpenSearch rejected the request \(HTTP 400\)"):
            os_backend.search(index_name, {"query": {"term": {"n": "not-a-number"}}})
    finally:
        os_backend.delete_index(index_name)


@pytest.mark.opensearch
def test_resume_resends_documents_the_pipeline_marked_as_failed(opensearch, os_backend, tiny_e5_bert, tmp_path):
    """Server mode: the model was not serving, the pipeline kept every document without a vector (exit 9). Once the
    model is back, ``--resume`` must send them again, not skip them as stored."""
    import uuid

    from e5plugin.deploy import DeployRequest, deploy
    from e5plugin.models import resolve_model
    from e5plugin.prefixes import Mode

    os_backend.apply_one_node_ml_settings()
    suffix = uuid.uuid4().hex[:8]
    index, model = f"t-h5-marked-{suffix}", f"t-h5-marked-model-{suffix}"
    spec = resolve_model(str(tiny_e5_bert))
    request = DeployRequest(index=index, mode=Mode.SERVER, model_id=model, replicas=0)
    try:
        deployed = deploy(os_backend, spec, request)
        os_backend.undeploy(deployed.model.model_id)  # as while a restarted node redeploys it
        path = tmp_path / "docs.jsonl"
        path.write_text(_lines([{"id": str(i), "text": f"document {i} about a password reset"} for i in range(3)]))
        first = run(opensearch.url, "ingest", str(path), "--index", index)
        assert first.exit_code == IngestFailedError.exit_code, first.output
        deploy(os_backend, spec, request)  # the model serves again
        resumed = run(opensearch.url, "ingest", str(path), "--index", index, "--resume")
        assert resumed.exit_code == 0 and "skipped" not in resumed.output, resumed.output
        for i in range(3):
            assert len(os_backend.get_document(index, str(i))["embedding"]) == spec.dims
    finally:
        os_backend.delete_index(index)
        with contextlib.suppress(Exception):
            os_backend.client.ingest.delete_pipeline(id=f"e5plugin-{index}")
        for found in os_backend.find_models(model):
            with contextlib.suppress(Exception):
                os_backend.delete_model(found["model_id"])
