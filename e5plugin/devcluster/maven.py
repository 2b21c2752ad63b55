"""Fetch artifacts from Maven Central (or a mirror) into a local cache, checksum-verified."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_REPOSITORY = "https://repo1.maven.org/maven2"


class ArtifactDownloadError(RuntimeError):
    """An artifact could not be fetched; the message names the coordinates and the URL."""


def repository_url() -> str:
    return os.environ.get("E5PLUGIN_MAVEN_REPO", DEFAULT_REPOSITORY).rstrip("/")


def coordinates(group: str, artifact: str, version: str, ext: str = "jar", classifier: str | None = None) -> str:
    return ":".join([group, artifact, version, ext] + ([classifier] if classifier else []))


def artifact_path(group: str, artifact: str, version: str, ext: str = "jar", classifier: str | None = None) -> str:
    """The artifact's path inside a Maven repository layout."""
    name = f"{artifact}-{version}" + (f"-{classifier}" if classifier else "") + f".{ext}"
    return f"{group.replace('.', '/')}/{artifact}/{version}/{name}"


def _download(url: str, dest: Path, timeout: float = 120.0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_text(url: str, timeout: float = 60.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode("ascii", "replace")


def fetch(
    group: str,
    artifact: str,
    version: str,
    ext: str = "jar",
    classifier: str | None = None,
    *,
    cache_dir: Path,
    repository: str | None = None,
) -> Path:
    """Return the local path of an artifact, downloading and sha1-verifying it on first use (and sha256 where the
    repository serves one). ``repository`` overrides E5PLUGIN_MAVEN_REPO / Maven Central.

    Looks in ``~/.m2/repository`` first (a site that pre-seeded Maven's own cache needs no network); a ``.sha1``
    Maven stored beside it is checked.
    """
    rel = artifact_path(group, artifact, version, ext, classifier)
    m2 = Path.home() / ".m2" / "repository" / rel
    m2_sha1 = m2.with_name(m2.name + ".sha1")
    if m2.is_file() and (
        not m2_sha1.is_file() or hashlib.sha1(m2.read_bytes()).hexdigest() == m2_sha1.read_text().split()[0].lower()
    ):
        return m2
    dest = Path(cache_dir) / "maven" / rel
    if dest.is_file():
        return dest
    url = f"{(repository or repository_url()).rstrip('/')}/{rel}"
    coords = coordinates(group, artifact, version, ext, classifier)
    try:
        _download(url, dest)
        expected = _read_text(url + ".sha1").split()[0].strip().lower()
    except urllib.error.HTTPError as exc:
        dest.unlink(missing_ok=True)
        raise ArtifactDownloadError(
            f"Maven artifact {coords} could not be downloaded from {url}: HTTP {exc.code}. "
            "Check the version, or set E5PLUGIN_MAVEN_REPO to a mirror that has it."
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise ArtifactDownloadError(
            f"Maven artifact {coords} could not be downloaded from {url}: {exc}. "
            "Is Maven Central (or E5PLUGIN_MAVEN_REPO) reachable from this machine?"
        ) from exc
    actual = hashlib.sha1(dest.read_bytes()).hexdigest()
    if actual != expected:
        dest.unlink(missing_ok=True)
        raise ArtifactDownloadError(f"Maven artifact {coords}: sha1 mismatch ({actual} != {expected}); deleted.")
    expected256 = _optional_checksum(url + ".sha256")
    if expected256 is not None and hashlib.sha256(dest.read_bytes()).hexdigest() != expected256:
        dest.unlink(missing_ok=True)
        raise ArtifactDownloadError(f"Maven artifact {coords}: sha256 mismatch with {url}.sha256; deleted.")
    return dest


def _optional_checksum(url: str) -> str | None:
    """The checksum a repository serves at ``url``, or ``None`` where it serves none (404)."""
    try:
        return _read_text(url).split()[0].strip().lower()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise ArtifactDownloadError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ArtifactDownloadError(f"{url} could not be read: {exc}") from exc
    except IndexError:
        return None
