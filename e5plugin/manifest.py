"""Air-gapped installs: `model pull` writes a directory plus a manifest (hub revision, sha256 of every file);
deploying from that directory verifies the manifest first, so what is deployed is exactly what was pulled."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .errors import ConfigurationError, UnknownModelError

MANIFEST = "e5plugin-manifest.json"
PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Normalize/*", "README.md"]
#: Files that hold weights: every one of them in the directory must be listed in the manifest.
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".h5", ".msgpack", ".gguf"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, model_id: str, revision: str | None, source: dict | None = None) -> dict:
    """Record ``model_id``, its revision, where it came from (``source``: default the hub) and every file's sha256."""
    files = {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and ".cache" not in p.relative_to(directory).parts
    }
    manifest = {
        "model_id": model_id,
        "revision": revision,
        "source": source or {"kind": "huggingface-hub", "repository": "https://huggingface.co"},
        "files": files,
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def verify_manifest(directory: Path) -> dict | None:
    """Check every file listed in the manifest; ``None`` when the directory has no manifest."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    root = Path(directory).resolve()
    listed = manifest.get("files", {})
    for rel, expected in listed.items():
        file = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not file.resolve().is_relative_to(root):
            raise ConfigurationError(
                f"{directory}: {MANIFEST} lists {rel!r}, a path outside the model directory; refusing the model "
                "(a manifest names only files inside it). Pull the model again."
            )
        if not file.is_file():
            raise ConfigurationError(f"{directory}: {rel} is listed in {MANIFEST} but missing; pull the model again.")
        if file_sha256(file) != expected:
            raise ConfigurationError(
                f"{directory}: {rel} does not match its sha256 in {MANIFEST} (changed or corrupted); pull it again."
            )
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        hub_cache = ".cache" in Path(rel).parts  # huggingface_hub's download metadata inside the directory
        if file.suffix in WEIGHT_SUFFIXES and file.is_file() and not hub_cache and rel not in listed:
            raise ConfigurationError(
                f"{directory}: {rel} is not listed in {MANIFEST}: weights that were not pulled could be loaded "
                "instead of the pulled ones. Remove the file, or pull the model again."
            )
    return manifest


def pull(model_id: str, target: Path, revision: str | None = None) -> dict:
    """Download ``model_id`` at ``revision`` (default: the hub's current commit, pinned) into ``target``."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as exc:  # pragma: no cover - extras
        raise UnknownModelError("`model pull` needs pip install 'e5plugin[models]'.") from exc
    try:
        commit = HfApi().model_info(model_id, revision=revision).sha
        snapshot_download(model_id, revision=commit, local_dir=str(target), allow_patterns=PATTERNS)
    except Exception as exc:  # the hub client raises many kinds
        raise UnknownModelError(
            f"Could not pull {model_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc})."
        ) from exc
    return write_manifest(Path(target), model_id, commit)
