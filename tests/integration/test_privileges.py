"""README's privilege table, row by row, on the secured Elasticsearch node: each command run through the CLI by a
user holding exactly the row's privileges (file realm: the integ-test distribution cannot create the `.security`
index the security API needs), plus the privilege a row must not go without.

Rows that need Elasticsearch's ML module (server-mode deploy, `model ...`, `pipeline install`, server-mode
`reindex`) cannot run here (no ML in the integ-test distribution) and are marked untested in README."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.errors import IngestFailedError, PermissionDeniedError
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch

pytestmark = [pytest.mark.secured, pytest.mark.slow]
PASSWORD = "priv-Pa55word"
PREFIX = f"priv{os.getpid()}"


@pytest.fixture(scope="module")
def node(secured_elasticsearch):
    if secured_elasticsearch.node is None:
        pytest.skip("needs the suite's secured node (file realm)")
    return secured_elasticsearch


@pytest.fixture(scope="module")
def admin(node):
    return connect(node.config())


@pytest.fixture(scope="module")
def docs_index(admin, tiny_e5_bert) -> str:
    """A client-mode index with three documents, set up by the superuser."""
    index = f"{PREFIX}-docs"
    spec = resolve_model(str(tiny_e5_bert))
    deploy(admin, spec, DeployRequest(index=index, mode=Mode.CLIENT))
    docs = [{"id": str(i), "text": t} for i, t in enumerate(["reset a password", "a quick fox", "login error"])]
    assert ingest(admin, index, docs, embedder=Embedder(spec), refresh=True).ok
    return index


_made: set[str] = set()


def user_with(node, name: str, *, indices: list[str], cluster: list[str] = ()) -> dict[str, str]:
    """A file-realm user holding exactly these privileges on the ``PREFIX-*`` indices; the CLI environment for it."""
    from e5plugin.devcluster.elasticsearch import add_file_role, add_file_user

    user = f"{PREFIX}-{name}"
    if user not in _made:
        grant = [{"names": [f"{PREFIX}-*"], "privileges": indices}]
        add_file_role(node.node, user, cluster=list(cluster), indices=grant)
        add_file_user(node.node, user, PASSWORD, [user])
        _made.add(user)
    deadline = time.monotonic() + 30
    while True:  # the file realm reloads within a few seconds
        try:
            connect(node.config(username=user, password=PASSWORD)).client.security.authenticate()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    return {
        "E5PLUGIN_URL": node.url,
        "E5PLUGIN_USERNAME": user,
        "E5PLUGIN_PASSWORD": PASSWORD,
        "HF_HUB_OFFLINE": "1",
    }


def run(env: dict[str, str], *args: str):
    result = CliRunner().invoke(cli, list(args), env=env)
    return result


def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_search_needs_read_and_view_index_metadata(node, docs_index):
    env = user_with(node, "search", indices=["read", "view_index_metadata"])
    result = run(env, "search", "reset password", "--index", docs_index, "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["id"] == "0"
    without = user_with(node, "search-noview", indices=["read"])
    refused = run(without, "search", "reset password", "--index", docs_index)
    assert refused.exit_code == PermissionDeniedError.exit_code, refused.output


def test_ingest_needs_index_maintenance_and_view_index_metadata(node, admin, docs_index, tmp_path):
    source = _jsonl(tmp_path / "more.jsonl", [{"id": "ingested", "text": "a new document"}])
    env = user_with(node, "ingest", indices=["index", "maintenance", "view_index_metadata"])
    for _ in range(2):  # the second run overwrites the same ids (index, not create)
        result = run(env, "ingest", str(source), "--index", docs_index, "--json")
        assert result.exit_code == 0, result.output
    assert admin.get_document(docs_index, "ingested")["text"] == "a new document"
    # create_doc may only create: ingest writes with explicit ids that re-runs overwrite, which create_doc refuses
    create_only = user_with(node, "ingest-create", indices=["create_doc", "maintenance", "view_index_metadata"])
    refused = run(create_only, "ingest", str(source), "--index", docs_index, "--json")
    assert refused.exit_code in (PermissionDeniedError.exit_code, IngestFailedError.exit_code), refused.output
    # the final refresh (documents searchable when ingest returns) needs maintenance
    no_refresh = user_with(node, "ingest-norefresh", indices=["index", "view_index_metadata"])
    refused = run(no_refresh, "ingest", str(source), "--index", docs_index, "--json")
    assert refused.exit_code == PermissionDeniedError.exit_code, refused.output
    assert "refresh" in refused.output


def test_ingest_only_role_may_switch_between_torch_and_fp32_onnx(node, admin, docs_index, tmp_path):
    """torch and fp32 ONNX give the same vectors: an ingest-only role (no `manage`) ingests with either into an
    index embedded by the other, and nothing is recorded; only int8 (other vectors) needs the record."""
    pytest.importorskip("onnxruntime")
    source = _jsonl(tmp_path / "onnx.jsonl", [{"id": "by-onnx", "text": "embedded on ONNX Runtime"}])
    env = user_with(node, "ingest", indices=["index", "maintenance", "view_index_metadata"])
    result = run(env, "ingest", str(source), "--index", docs_index, "--embed-backend", "onnx", "--json")
    assert result.exit_code == 0, result.output
    assert admin.index_meta(docs_index).get("embed_backend", "torch") == "torch"
    admin.refresh(docs_index)
    hits = SemanticSearch.for_index(docs_index, backend=admin).search("embedded on ONNX Runtime", k=1)
    assert hits[0].id == "by-onnx"


def test_client_deploy_and_index_create_need_create_index_manage_and_view_index_metadata(node, admin, tiny_e5_bert):
    env = user_with(node, "deploy", cluster=["monitor"], indices=["create_index", "manage", "view_index_metadata"])
    for command, index in (("deploy", f"{PREFIX}-deployed"), ("index", f"{PREFIX}-created")):
        args = ["deploy", "--model", str(tiny_e5_bert), "--index", index, "--mode", "client"]
        if command == "index":
            args = ["index", "create", "--model", str(tiny_e5_bert), "--index", index]
        result = run(env, *args)
        assert result.exit_code == 0, result.output
        again = run(env, *args)  # re-running changes nothing, with the same privileges
        assert again.exit_code == 0, again.output
        assert admin.index_meta(index)["mode"] == "client"
    without_monitor = user_with(node, "deploy-nomonitor", indices=["create_index", "manage", "view_index_metadata"])
    refused = run(without_monitor, "deploy", "--model", str(tiny_e5_bert), "--index", f"{PREFIX}-y", "--mode", "client")
    assert refused.exit_code == PermissionDeniedError.exit_code and "cluster:monitor/nodes/info" in refused.output
    without_manage = user_with(node, "deploy-nomanage", cluster=["monitor"], indices=["create_index"])
    refused = run(without_manage, "deploy", "--model", str(tiny_e5_bert), "--index", f"{PREFIX}-x", "--mode", "client")
    assert refused.exit_code == PermissionDeniedError.exit_code, refused.output


def test_client_reindex_needs_read_index_maintenance_and_view_index_metadata(node, admin, docs_index):
    admin.client.index(index=docs_index, id="raw", document={"text": "stored without a vector"}, refresh=True)
    env = user_with(node, "reindex", indices=["read", "index", "maintenance", "view_index_metadata"])
    result = run(env, "reindex", "--index", docs_index)
    assert result.exit_code == 0, result.output
    assert len(admin.get_document(docs_index, "raw")["embedding"]) > 0
    admin.client.index(index=docs_index, id="raw2", document={"text": "also without a vector"}, refresh=True)
    no_refresh = user_with(node, "reindex-norefresh", indices=["read", "index", "view_index_metadata"])
    refused = run(no_refresh, "reindex", "--index", docs_index)
    assert refused.exit_code == PermissionDeniedError.exit_code and "indices:admin/refresh" in refused.output


def test_doctor_needs_monitor_read_and_view_index_metadata(node, docs_index):
    env = user_with(node, "doctor", cluster=["monitor"], indices=["read", "view_index_metadata"])
    result = run(env, "doctor", "--json")
    assert result.exit_code in (0, 1), result.output  # 1: problems found (this node has no ML module)
    report = json.loads(result.output)
    assert [i["documents"] >= 3 for i in report["indices"] if i["index"] == docs_index] == [True]
    assert "403" not in result.output
