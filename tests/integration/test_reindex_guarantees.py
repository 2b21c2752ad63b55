"""`reindex` (backfill) and bulk-load settings from the operator's side: streamed (bounded memory), a concurrent
edit is never overwritten by a stale copy, a chunked index is not re-embedded every run, and bulk settings on a
live index are opt-in, restored on every path and flagged by `doctor` when a crash left them behind."""

from __future__ import annotations

import json

import pytest

from e5plugin.backfill import backfill
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.doctor import diagnose
from e5plugin.embed import Embedder
from e5plugin.ingest import BULK_LOAD_META_KEY, BULK_LOAD_SETTINGS, bulk_load_settings, ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import IndexSetup
from e5plugin.tasks.chunking import ChunkingSettings

pytestmark = pytest.mark.elasticsearch
NAMES = list(BULK_LOAD_SETTINGS)


def _setup(backend, index: str) -> IndexSetup:
    return IndexSetup.from_meta(backend.index_meta(index))


def _client_index(backend, model_dir, index: str, **request) -> IndexSetup:
    backend.delete_index(index)
    deploy(backend, resolve_model(str(model_dir)), DeployRequest(index=index, mode=Mode.CLIENT, **request))
    return _setup(backend, index)


def _raw_docs(backend, index: str, count: int) -> None:
    """Documents stored without vectors (e.g. written by another tool): what reindex backfills."""
    from e5plugin.engines.base import Backend

    assert isinstance(backend, Backend)
    actions = ({"_index": index, "_id": str(i), "_source": {"text": f"document number {i}"}} for i in range(count))
    for ok, item in backend.streaming_bulk(actions, chunk_size=500):
        assert ok, item
    backend.refresh(index)


class _CountingScan:
    """Wraps the backend's scan: counts the hits read, and runs ``after`` once a given document was read."""

    def __init__(self, backend, after: tuple[str, callable] | None = None) -> None:
        self.backend, self.read, self.after = backend, 0, after
        self.original = backend.scan

    def __call__(self, index, body, size=500):
        for hit in self.original(index, body, size=size):
            self.read += 1
            yield hit
            if self.after and hit["_id"] == self.after[0]:
                self.after[1]()


def test_reindex_keeps_what_it_read_ahead_on_disk_not_in_memory(es_backend, tiny_e5_bert, index_name):
    """1,000 documents of 20 KB (20 MB of text) reindexed in pages of 50: the traced Python heap never holds more
    than a few pages (the scroll is read ahead into a temporary file, not into memory)."""
    import tracemalloc

    setup = _client_index(es_backend, tiny_e5_bert, index_name)
    text = "word " * 4000  # 20 KB
    actions = ({"_index": index_name, "_id": str(i), "_source": {"text": f"{i} {text}"}} for i in range(1000))
    for ok, item in es_backend.streaming_bulk(actions, chunk_size=100):
        assert ok, item
    es_backend.refresh(index_name)
    embedder = Embedder(resolve_model(str(tiny_e5_bert)), plan=setup.plan)
    tracemalloc.start()
    try:
        report = backfill(es_backend, index_name, setup, batch_size=50, embedder=embedder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.indexed == 1000 and report.conflicts == 0
    assert es_backend.count(index_name, {"exists": {"field": "embedding"}}) == 1000
    assert peak < 12_000_000, f"peak traced heap {peak / 1e6:.1f} MB for 20 MB of documents"
    es_backend.delete_index(index_name)


class _SlowEmbedder:
    """An embedder that takes its time (a real model on a busy CPU); while it works on the second batch the
    cluster forgets every open scroll, as it does when a scroll outlives its keep-alive."""

    def __init__(self, embedder, backend) -> None:
        self.embedder, self.backend, self.calls = embedder, backend, 0

    def __getattr__(self, name):
        return getattr(self.embedder, name)

    def encode_passages(self, texts, batch_size=None):
        self.calls += 1
        if self.calls == 2:
            import time

            time.sleep(1.0)
            self.backend.client.clear_scroll(scroll_id="_all")  # the keep-alive ran out while embedding
        return self.embedder.encode_passages(texts, batch_size)


def test_reindex_survives_an_embedder_slower_than_the_scroll_lives(es_backend, tiny_e5_bert, index_name):
    setup = _client_index(es_backend, tiny_e5_bert, index_name)
    _raw_docs(es_backend, index_name, 120)
    slow = _SlowEmbedder(Embedder(resolve_model(str(tiny_e5_bert)), plan=setup.plan), es_backend)
    report = backfill(es_backend, index_name, setup, batch_size=20, embedder=slow)
    assert slow.calls >= 2
    assert report.ok and report.indexed == 120, report
    assert es_backend.count(index_name, {"exists": {"field": "embedding"}}) == 120
    es_backend.delete_index(index_name)


def test_rollout_survives_an_embedder_slower_than_the_scroll_lives(es_backend, tiny_e5_bert, index_name):
    from e5plugin.tasks.rollout import rollout

    spec = resolve_model(str(tiny_e5_bert))
    alias = f"{index_name}-alias"
    docs = [{"id": str(i), "text": f"document number {i}"} for i in range(120)]
    first = rollout(es_backend, spec, alias, documents=docs, request=DeployRequest(index="x", replicas=0))
    slow = _SlowEmbedder(Embedder(spec), es_backend)
    try:
        second = rollout(
            es_backend, spec, alias, request=DeployRequest(index="x", replicas=0), embedder=slow, batch_size=20
        )
        assert slow.calls >= 2
        assert second.copied == 120 and es_backend.alias_indices(alias) == [second.index]
        assert es_backend.count(second.index, {"exists": {"field": "embedding"}}) == 120
    finally:
        for name in es_backend.list_indices(f"{alias}-v*"):
            es_backend.delete_index(name)
    assert first.index != second.index


def test_a_document_edited_during_reindex_keeps_the_edit(es_backend, tiny_e5_bert, index_name):
    setup = _client_index(es_backend, tiny_e5_bert, index_name)
    _raw_docs(es_backend, index_name, 120)

    def edit() -> None:  # an application updates document 7 after reindex read it, before reindex wrote it
        es_backend.client.index(index=index_name, id="7", document={"text": "edited by the app", "lang": "en"})

    es_backend.scan = _CountingScan(es_backend, after=("7", edit))
    try:
        report = backfill(es_backend, index_name, setup, batch_size=50)
    finally:
        del es_backend.scan
    stored = es_backend.get_document(index_name, "7")
    assert stored["text"] == "edited by the app" and stored["lang"] == "en"
    assert report.conflicts == 1 and report.failed == 0 and report.indexed == 119
    again = backfill(es_backend, index_name, setup, batch_size=50)  # the re-run embeds the edited document
    assert again.indexed == 1 and again.conflicts == 0
    stored = es_backend.get_document(index_name, "7")
    assert stored["text"] == "edited by the app" and len(stored["embedding"]) == setup.spec.dims
    es_backend.delete_index(index_name)


def test_reindex_of_a_chunked_index_embeds_only_what_needs_it(es_backend, tiny_e5_bert, index_name):
    setup = _client_index(
        es_backend, tiny_e5_bert, index_name, chunking=ChunkingSettings(chunk_size=16, overlap=4), replicas=0
    )
    embedder = Embedder(setup.spec, plan=setup.plan)
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)
    docs = [{"id": str(i), "text": f"{long_text} number {i}"} for i in range(3)]
    assert ingest(es_backend, index_name, docs, embedder=embedder, refresh=True).ok
    first = backfill(es_backend, index_name, setup)
    assert first.indexed == 0, f"re-embedded {first.indexed} documents that have passages with vectors"
    es_backend.client.index(index=index_name, id="raw", document={"text": long_text}, refresh=True)
    second = backfill(es_backend, index_name, setup)
    assert second.indexed == 1 and second.ok
    passages = es_backend.get_document(index_name, "raw")["passages"]
    assert len(passages) > 1 and all(len(p["embedding"]) == setup.spec.dims for p in passages)
    assert backfill(es_backend, index_name, setup).indexed == 0
    es_backend.delete_index(index_name)


def test_dedup_sees_the_documents_of_a_chunked_index(es_backend, tiny_e5_bert, index_name):
    from e5plugin.tasks.dedup import find_duplicates

    setup = _client_index(
        es_backend, tiny_e5_bert, index_name, chunking=ChunkingSettings(chunk_size=16, overlap=4), replicas=0
    )
    embedder = Embedder(setup.spec, plan=setup.plan)
    text = "the quick brown fox jumps over the lazy dog and the cat"
    docs = [
        {"id": "a", "text": text},
        {"id": "b", "text": text + "."},
        {"id": "c", "text": "password reset help for the account login error"},
    ]
    assert ingest(es_backend, index_name, docs, embedder=embedder, refresh=True).ok
    report = find_duplicates(es_backend, index_name, threshold=0.99)
    assert report.documents == 3
    assert [sorted(m["id"] for m in c.members) for c in report.clusters] == [["a", "b"]]
    es_backend.delete_index(index_name)


# ---- bulk-load settings ------------------------------------------------------------------------------------------
@pytest.fixture
def live_index(es_backend, tiny_e5_bert, index_name):
    _client_index(es_backend, tiny_e5_bert, index_name, replicas=1)
    es_backend.put_index_settings(index_name, {"refresh_interval": "7s"})
    embedder = Embedder(resolve_model(str(tiny_e5_bert)))
    assert ingest(es_backend, index_name, [{"id": "live", "text": "already here"}], embedder=embedder, refresh=True).ok
    yield index_name
    es_backend.delete_index(index_name)


def _big_file(tmp_path, size: int = 10 << 20):
    """Over the 10 MB of ``--bulk-settings auto``, in a few documents (a large non-text field keeps ingest fast)."""
    source = tmp_path / "big.jsonl"
    blob = "y" * (1 << 20)
    with source.open("w") as fh:
        for i in range(size // len(blob) + 1):
            fh.write(json.dumps({"id": f"b{i}", "text": f"big document {i}", "blob": blob}) + "\n")
    return source


def _settings_version(backend, index: str) -> int:
    """The index's settings version in the cluster state: every settings update (also one undone later) counts."""
    state = backend.client.cluster.state(metric="metadata", index=index)
    return int(state["metadata"]["indices"][index]["settings_version"])


def test_bulk_settings_auto_leaves_a_live_non_empty_index_alone(es_backend, live_index):
    from e5plugin.backfill import bulk_settings_wanted

    assert bulk_settings_wanted(es_backend, live_index, "auto", 20 << 20) is False  # live, non-empty: opt-in only
    assert bulk_settings_wanted(es_backend, live_index, "on", 20 << 20) is True
    assert bulk_settings_wanted(es_backend, live_index, "auto", 1 << 20) is False
    es_backend.client.delete(index=live_index, id="live", refresh=True)
    assert bulk_settings_wanted(es_backend, live_index, "auto", 20 << 20) is True  # empty: a first load


def test_cli_ingest_of_a_big_file_into_a_live_index_does_not_touch_its_settings(
    elasticsearch, es_backend, live_index, tmp_path
):
    from click.testing import CliRunner

    from e5plugin.cli import cli

    source = _big_file(tmp_path)
    before = _settings_version(es_backend, live_index)
    result = CliRunner().invoke(
        cli, ["--url", elasticsearch.url, "ingest", str(source), "--index", live_index, "--json"], env={}
    )
    assert result.exit_code == 0, result.output
    assert _settings_version(es_backend, live_index) == before, "the live index was switched to bulk settings"
    assert es_backend.index_settings(live_index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}
    assert not es_backend.index_meta(live_index).get(BULK_LOAD_META_KEY)


def test_bulk_settings_are_restored_on_keyboard_interrupt(es_backend, live_index):
    embedder = Embedder(resolve_model(str(_model_dir(es_backend, live_index))))

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    docs = ({"id": str(i), "text": f"document {i}"} for i in range(50))
    with pytest.raises(KeyboardInterrupt):
        ingest(es_backend, live_index, docs, embedder=embedder, batch_size=10, bulk_settings=True, progress=interrupt)
    assert es_backend.index_settings(live_index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}
    assert not es_backend.index_meta(live_index).get(BULK_LOAD_META_KEY)


def _model_dir(backend, index: str) -> str:
    return _setup(backend, index).spec.local_path


def test_doctor_flags_an_index_left_in_bulk_settings_and_says_how_to_restore(es_backend, live_index):
    # what a SIGKILLed load leaves behind: bulk settings on, the user's values recorded in _meta
    es_backend.update_index_meta(
        live_index, {BULK_LOAD_META_KEY: {"refresh_interval": "7s", "number_of_replicas": "1"}}
    )
    es_backend.put_index_settings(live_index, BULK_LOAD_SETTINGS)
    report = diagnose(es_backend)
    problems = [p for p in report.problems if live_index in p.what]
    assert problems, [p.what for p in report.problems]
    assert "bulk" in problems[0].what and "refresh_interval" in problems[0].what
    assert '"refresh_interval": "7s"' in problems[0].fix and '"number_of_replicas": "1"' in problems[0].fix
    with bulk_load_settings(es_backend, live_index):  # what the fix's e5plugin route does: restore the recorded values
        pass
    assert es_backend.index_settings(live_index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}
    assert not [p for p in diagnose(es_backend).problems if live_index in p.what]
