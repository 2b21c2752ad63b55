"""`model pull` writes a manifest (hub revision + sha256 of every file); a directory that no longer matches it is
refused before anything is deployed. The hub itself cannot be reached here: its client is replaced by a copy of a
local model directory, and the offline failure is the real one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e5plugin import manifest
from e5plugin.errors import ConfigurationError, UnknownModelError
from e5plugin.models import resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def pulled(tiny_e5_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    huggingface_hub = pytest.importorskip("huggingface_hub")

    class Info:
        sha = COMMIT

    def snapshot_download(model_id, revision, local_dir, allow_patterns):
        assert revision == COMMIT  # the pinned commit, not a moving branch
        shutil.copytree(tiny_e5_bert, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, model_id, revision=None: Info())
    target = tmp_path / "acme-tiny-e5"
    written = manifest.pull("acme/tiny-e5", target)
    assert written["revision"] == COMMIT and written["model_id"] == "acme/tiny-e5"
    return target


def test_pull_pins_the_revision_and_hashes_every_file(pulled: Path) -> None:
    recorded = json.loads((pulled / manifest.MANIFEST).read_text())
    assert "config.json" in recorded["files"] and manifest.MANIFEST not in recorded["files"]
    assert recorded["files"]["config.json"] == manifest.file_sha256(pulled / "config.json")
    spec = resolve_model(str(pulled))
    assert spec.model_id == "acme/tiny-e5" and spec.revision == COMMIT and spec.weights_sha256
    assert spec.query_prefix == "query: " and spec.passage_prefix == "passage: "


def test_a_changed_file_is_refused(pulled: Path) -> None:
    with (pulled / "config.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(ConfigurationError, match="does not match its sha256"):
        resolve_model(str(pulled))


def test_a_missing_file_is_refused(pulled: Path) -> None:
    (pulled / "vocab.txt").unlink()
    with pytest.raises(ConfigurationError, match="missing; pull the model again"):
        resolve_model(str(pulled))


def test_a_directory_without_manifest_is_still_accepted(tiny_e5_bert: Path) -> None:
    assert manifest.verify_manifest(tiny_e5_bert) is None
    assert resolve_model(str(tiny_e5_bert)).revision is None


def test_pull_without_the_hub_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UnknownModelError, match="Could not pull 'intfloat/e5-small-v2'"):
        manifest.pull("intfloat/e5-small-v2", tmp_path / "e5")
    assert not (tmp_path / "e5" / manifest.MANIFEST).exists()


# ---- a manifest names only files inside the model directory, and covers every weight file ----------------------
def _rewrite(directory: Path, edit) -> None:
    recorded = json.loads((directory / manifest.MANIFEST).read_text())
    edit(recorded["files"])
    (directory / manifest.MANIFEST).write_text(json.dumps(recorded))


def test_an_entry_outside_the_directory_is_refused(pulled: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    _rewrite(pulled, lambda files: files.update({"../outside.json": manifest.file_sha256(outside)}))
    with pytest.raises(ConfigurationError, match=r"'\.\./outside\.json'.*outside the model directory"):
        resolve_model(str(pulled))


def test_an_absolute_entry_is_refused(pulled: Path, tmp_path: Path) -> None:
    outside = tmp_path / "abs.json"
    outside.write_text("{}")
    _rewrite(pulled, lambda files: files.update({str(outside): manifest.file_sha256(outside)}))
    with pytest.raises(ConfigurationError, match="outside the model directory"):
        resolve_model(str(pulled))


def test_a_weight_file_not_in_the_manifest_is_refused(pulled: Path) -> None:
    shutil.copy(pulled / "model.safetensors", pulled / "pytorch_model.bin")
    with pytest.raises(ConfigurationError, match=r"pytorch_model\.bin is not listed in"):
        resolve_model(str(pulled))


def test_an_unlisted_weight_file_in_a_subfolder_is_refused(pulled: Path) -> None:
    (pulled / "onnx").mkdir()
    (pulled / "onnx" / "model.onnx").write_bytes(b"not listed")
    with pytest.raises(ConfigurationError, match=r"onnx/model\.onnx is not listed in"):
        resolve_model(str(pulled))


def test_a_model_kept_under_a_cache_folder_gets_a_full_manifest(tiny_e5_bert: Path, tmp_path: Path) -> None:
    """Only the hub client's own ``.cache`` inside the model directory is skipped, not a ~/.cache above it."""
    target = shutil.copytree(tiny_e5_bert, tmp_path / ".cache" / "e5plugin" / "models" / "tiny")
    (target / ".cache").mkdir()
    (target / ".cache" / "download.lock").write_text("")
    written = manifest.write_manifest(target, "acme/tiny-e5", None)
    assert "model.safetensors" in written["files"] and "config.json" in written["files"]
    assert not any(name.startswith(".cache/") for name in written["files"])
    (target / "pytorch_model.bin").write_bytes(b"unlisted")
    with pytest.raises(ConfigurationError, match=r"pytorch_model\.bin is not listed"):
        manifest.verify_manifest(target)
