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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, model_id: str, revision: str | None) -> dict:
    files = {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and ".cache" not in p.parts
    }
    manifest = {
        "model_id": model_id,
        "revision": revision,
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
    for rel, expected in manifest.get("files", {}).items():
        file = Path(directory) / rel
        if not file.is_file():
            raise ConfigurationError(f"{directory}: {rel} is listed in {MANIFEST} but missing; pull the model again.")
        if file_sha256(file) != expected:
            raise ConfigurationError(
                f"{directory}: {rel} does not match its sha256 in {MANIFEST} (changed or corrupted); pull it again."
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
