"""`e5plugin model delete` on a model an index still uses: refused with the users named, the index keeps working;
after the index is gone (or with --force) the model is deleted; deleting again is safe."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.errors import ConflictError

pytestmark = pytest.mark.opensearch


def _run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--url", url, *args])


def test_deleting_a_model_an_index_uses_is_refused_until_the_index_is_gone(
    opensearch, os_backend, tiny_e5_bert, index_name, tmp_path
):
    os_backend.apply_one_node_ml_settings()
    name = "t-delete-in-use"
    deployed = _run(
        opensearch.url,
        "deploy",
        "-m",
        str(tiny_e5_bert),
        "-i",
        index_name,
        "--mode",
        "server",
        "--model-id",
        name,
        "--replicas",
        "0",
    )
    assert deployed.exit_code == 0, deployed.output
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"id": "1", "text": "reset a password"}) + "\n")
    try:
        refused = _run(opensearch.url, "model", "delete", name, "--yes")
        assert refused.exit_code == ConflictError.exit_code, refused.output
        assert index_name in refused.output and "--force" in refused.output, refused.output
        # the refused delete left the model deployed: the index still ingests and answers
        assert _run(opensearch.url, "ingest", str(source), "-i", index_name).exit_code == 0
        hits = json.loads(_run(opensearch.url, "search", "password", "-i", index_name, "--json").output)
        assert [hit["id"] for hit in hits] == ["1"]
    finally:
        os_backend.delete_index(index_name)
    deleted = _run(opensearch.url, "model", "delete", name, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert os_backend.model_ids(name) == [] and "left in place" in deleted.output
    again = _run(opensearch.url, "model", "delete", name, "--yes")
    assert again.exit_code == 0 and "nothing to delete" in again.output, again.output
