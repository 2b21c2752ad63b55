"""Bulk-load index settings (refresh_interval -1, 0 replicas) during an ingest, restored afterwards, also on failure
and after a run that died mid-load (the previous values are kept in the index's _meta)."""

from __future__ import annotations

import pytest

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import BULK_LOAD_META_KEY, BULK_LOAD_SETTINGS, bulk_load_settings, ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode

pytestmark = pytest.mark.elasticsearch
NAMES = list(BULK_LOAD_SETTINGS)


@pytest.fixture
def index(es_backend, tiny_bert, index_name):
    spec = resolve_model(str(tiny_bert))
    es_backend.delete_index(index_name)
    deploy(es_backend, spec, DeployRequest(index=index_name, mode=Mode.CLIENT, replicas=1))
    es_backend.put_index_settings(index_name, {"refresh_interval": "7s"})
    yield index_name
    es_backend.delete_index(index_name)


def test_ingest_with_bulk_settings_restores_the_previous_values(es_backend, tiny_bert, index) -> None:
    seen = []
    embedder = Embedder(resolve_model(str(tiny_bert)))
    docs = ({"id": str(i), "text": f"document number {i}"} for i in range(30))

    def progress(_: int) -> None:
        if not seen:
            seen.append(es_backend.index_settings(index, NAMES))

    report = ingest(
        es_backend, index, docs, embedder=embedder, batch_size=10, bulk_settings=True, progress=progress, refresh=True
    )
    assert report.ok and report.indexed == 30 and es_backend.count(index) == 30
    assert seen == [{"refresh_interval": "-1", "number_of_replicas": "0"}]
    assert es_backend.index_settings(index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}
    assert not es_backend.index_meta(index).get(BULK_LOAD_META_KEY)


def test_settings_are_restored_when_the_load_fails(es_backend, index) -> None:
    with pytest.raises(RuntimeError), bulk_load_settings(es_backend, index) as previous:
        assert previous == {"refresh_interval": "7s", "number_of_replicas": "1"}
        raise RuntimeError("the load failed")
    assert es_backend.index_settings(index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}


def test_a_default_value_is_restored_as_the_default(es_backend, index) -> None:
    es_backend.put_index_settings(index, {"refresh_interval": None})
    with bulk_load_settings(es_backend, index) as previous:
        assert previous["refresh_interval"] is None
    assert es_backend.index_settings(index, NAMES) == {"refresh_interval": None, "number_of_replicas": "1"}


def test_a_run_that_died_mid_load_is_repaired_by_the_next_one(es_backend, index) -> None:
    # what a SIGKILLed load leaves behind: bulk settings on, the user's values recorded in _meta
    es_backend.update_index_meta(index, {BULK_LOAD_META_KEY: {"refresh_interval": "7s", "number_of_replicas": "1"}})
    es_backend.put_index_settings(index, BULK_LOAD_SETTINGS)
    with bulk_load_settings(es_backend, index) as previous:
        assert previous == {"refresh_interval": "7s", "number_of_replicas": "1"}  # not the -1 it found
    assert es_backend.index_settings(index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}


def test_cli_ingest_bulk_settings_on_restores_the_index(elasticsearch, es_backend, index, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from e5plugin.cli import cli

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": f"document {i}"}) + "\n" for i in range(12)))
    args = ["--url", elasticsearch.url, "ingest", str(source), "--index", index, "--bulk-settings", "on", "--json"]
    result = CliRunner().invoke(cli, args, env={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert es_backend.count(index) == 12
    assert es_backend.index_settings(index, NAMES) == {"refresh_interval": "7s", "number_of_replicas": "1"}
