"""Air-gapped deploys through real nodes: a directory written by `model pull` (manifest of the hub revision and
every file's sha256) deploys with no network; the cluster records revision and hashes and `doctor` shows them; a
directory that no longer matches its manifest is refused before anything is created."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.manifest import write_manifest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def pulled(tiny_e5_bert: Path, tmp_path: Path) -> Path:
    """What `e5plugin model pull acme/tiny-e5 --to DIR` leaves behind (the download itself needs the hub)."""
    target = tmp_path / "acme-tiny-e5"
    shutil.copytree(tiny_e5_bert, target)
    write_manifest(target, "acme/tiny-e5", COMMIT)
    return target


def _run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--url", url, *args], env={"HF_HUB_OFFLINE": "1"}, catch_exceptions=False)


@pytest.mark.elasticsearch
def test_deploy_from_a_pulled_directory_records_revision_and_hashes(elasticsearch, es_backend, pulled):
    es_backend.delete_index("airgap")
    deployed = _run(
        elasticsearch.url, "deploy", "-m", str(pulled), "-i", "airgap", "--mode", "client", "--replicas", "0"
    )
    assert deployed.exit_code == 0, deployed.output
    recorded = es_backend.index_meta("airgap")["model"]
    spec = resolve_model(str(pulled))
    assert recorded["revision"] == COMMIT and recorded["weights_sha256"] == spec.weights_sha256
    doctor = _run(elasticsearch.url, "doctor")
    line = next(x for x in doctor.output.splitlines() if x.startswith("index      airgap:"))
    assert f"revision {COMMIT}" in line and f"sha256 {spec.weights_sha256[:12]}" in line
    assert "model acme/tiny-e5" in line


@pytest.mark.elasticsearch
def test_a_tampered_directory_is_refused_and_nothing_is_created(elasticsearch, es_backend, pulled):
    es_backend.delete_index("airgap-tampered")
    weights = next(p for p in pulled.iterdir() if p.suffix in (".safetensors", ".bin"))
    with weights.open("r+b") as fh:  # one flipped byte, as from a bad copy onto the offline machine
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    refused = _run(elasticsearch.url, "deploy", "-m", str(pulled), "-i", "airgap-tampered", "--mode", "client")
    assert refused.exit_code == 2 and "does not match its sha256" in refused.output and weights.name in refused.output
    assert not es_backend.index_exists("airgap-tampered")


@pytest.mark.opensearch
def test_server_deploy_from_a_pulled_directory_carries_the_revision_into_ml_commons(opensearch, os_backend, pulled):
    os_backend.apply_one_node_ml_settings()
    os_backend.delete_index("airgap-server")
    request = DeployRequest(index="airgap-server", mode=Mode.SERVER, model_id="airgap-tiny", replicas=0)
    model_id = deploy(os_backend, resolve_model(str(pulled)), request).model.model_id
    listed = {m.model_id: m for m in os_backend.list_models()}[model_id]
    assert listed.provenance["revision"] == COMMIT and listed.provenance["source"] == "acme/tiny-e5"
    assert listed.provenance["weights_sha256"] == resolve_model(str(pulled)).weights_sha256
