"""Assemble an OpenSearch home with ml-commons, k-NN and neural-search from Maven Central, and configure nodes.

Layout under ``cache_dir``::

    maven/...                                   downloaded artifacts (shared with maven.fetch)
    opensearch/opensearch-<version>/            the assembled home (complete once MARKER exists)
    opensearch/opensearch-<version>/e5plugin-ml-cache/pytorch/<folder>/
                                                libtorch + DJL JNI, linked into each node's <path.data>/ml_cache

The integ-test-zip distribution of OpenSearch 3.x already carries every module (ingest-common, lang-painless,
reindex, analysis-common, mapper-extras, parent-join, transport-grpc, ...); only the plugins and the PyTorch
natives that ml-commons' DJL would otherwise download from publish.djl.ai are added.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import maven
from .java import find_java_home
from .node import Node

DEFAULT_VERSION = "3.6.0"
MARKER = ".e5plugin-assembled.json"
ML_CACHE_SEED = "e5plugin-ml-cache"
MIN_JAVA = 21
MAX_HEAP_BYTES = 2 << 30

# Persistent cluster settings that let ml-commons deploy local models on a one-node test cluster.
ML_ONE_NODE_SETTINGS: dict[str, object] = {
    "plugins.ml_commons.only_run_on_ml_node": False,
    "plugins.ml_commons.allow_registering_model_via_local_file": True,
    "plugins.ml_commons.native_memory_threshold": 100,
    "plugins.ml_commons.jvm_heap_memory_threshold": 100,
    "plugins.ml_commons.disk_free_space_threshold": "100mb",
    "plugins.ml_commons.model_access_control_enabled": False,
    # default 10: a dev/test node that tries several models (or a test suite) runs into "Exceed max local
    # model per node limit" on the 11th deployment
    "plugins.ml_commons.max_model_on_node": 100,
}

# Modules the plugins and the product rely on; all ship in the 3.x integ-test-zip.
REQUIRED_MODULES = (
    "analysis-common",
    "ingest-common",
    "lang-painless",
    "mapper-extras",
    "parent-join",
    "reindex",
    "search-pipeline-common",
    "transport-grpc",
    "transport-netty4",
)


class AssemblyError(RuntimeError):
    """The OpenSearch home could not be built; the message says which step failed."""


@dataclass(frozen=True)
class Artifact:
    """Maven coordinates, with a pinned sha256 where Maven Central publishes no checksum files."""

    group: str
    artifact: str
    version: str
    ext: str = "jar"
    classifier: str | None = None
    sha256: str | None = None

    @property
    def coords(self) -> str:
        return maven.coordinates(self.group, self.artifact, self.version, self.ext, self.classifier)


@dataclass(frozen=True)
class Release:
    """Everything that makes one OpenSearch version's home."""

    version: str
    distribution: Artifact
    plugins: tuple[Artifact, ...]  # in install order
    djl_version: str  # the ai.djl api jar bundled with ml-commons (prefix of the JNI file name)
    pytorch_version: str  # DLModel sets PYTORCH_VERSION to this (and PYTORCH_PRECXX11=true)
    pytorch_native: Artifact
    pytorch_jni: Artifact
    jni_entry: str = "jnilib/linux-x86_64/cpu/libdjl_torch.so"

    @property
    def ml_cache_folder(self) -> str:
        """The folder DJL looks in: ``<ver>-<flavor>-<classifier>``; DLModel forces the -precxx11 flavor name."""
        return f"{self.pytorch_version}-cpu-precxx11-linux-x86_64"


def _plugin(artifact: str, version: str, sha256: str) -> Artifact:
    return Artifact("org.opensearch.plugin", artifact, version, "zip", sha256=sha256)


RELEASES: dict[str, Release] = {
    "3.6.0": Release(
        version="3.6.0",
        distribution=Artifact("org.opensearch.distribution.integ-test-zip", "opensearch", "3.6.0", "zip"),
        plugins=(
            _plugin(
                "opensearch-job-scheduler",
                "3.6.0.0",
                "f81d0aa9fc850b18f803292bd7ae68bd33561f6c1d12db0f68529d40eddcee24",
            ),
            _plugin(
                "opensearch-ml-plugin", "3.6.0.0", "c051d436fe1936da1477bb999db829eb2bc92b12989e376c300d0a874fb90f9d"
            ),
            _plugin("opensearch-knn", "3.6.0.0", "ac392ca28a39b3bf290648a422ef30cb149dda2963a9d7feb26060e932341c9a"),
            _plugin("neural-search", "3.6.0.0", "6ef1b206e79391e2e36268e32dc34d27fd8b8a59a8eb0a7393c97d53b038e433"),
        ),
        djl_version="0.31.1",
        pytorch_version="2.5.1",
        # The cxx11-ABI libtorch; DJL only names its folder "precxx11" because DLModel sets PYTORCH_PRECXX11.
        pytorch_native=Artifact("ai.djl.pytorch", "pytorch-native-cpu", "2.5.1", "jar", "linux-x86_64"),
        # No 2.5.1-0.31.1 JNI is on Maven Central; 0.32.0's exports every native method DJL 0.31.1 declares.
        pytorch_jni=Artifact("ai.djl.pytorch", "pytorch-jni", "2.5.1-0.32.0", "jar"),
    ),
}


def release(version: str) -> Release:
    """The recipe for ``version``; only versions verified to run are listed."""
    try:
        return RELEASES[version]
    except KeyError:
        raise AssemblyError(f"OpenSearch {version} is not supported (known: {', '.join(sorted(RELEASES))}).") from None


# ---- downloads --------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(art: Artifact, cache_dir: Path) -> Path:
    """Download (or reuse) an artifact; sha1-checked by maven.fetch, or against the pinned sha256."""
    if art.sha256 is None:
        return maven.fetch(art.group, art.artifact, art.version, art.ext, art.classifier, cache_dir=cache_dir)
    rel = maven.artifact_path(art.group, art.artifact, art.version, art.ext, art.classifier)
    for candidate in (Path.home() / ".m2" / "repository" / rel, Path(cache_dir) / "maven" / rel):
        if candidate.is_file() and _sha256(candidate) == art.sha256:
            return candidate
    dest = Path(cache_dir) / "maven" / rel
    url = f"{maven.repository_url()}/{rel}"
    try:
        maven._download(url, dest)
    except urllib.error.HTTPError as exc:
        raise maven.ArtifactDownloadError(
            f"Maven artifact {art.coords} could not be downloaded from {url}: HTTP {exc.code}. "
            "Check the version, or set E5PLUGIN_MAVEN_REPO to a mirror that has it."
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise maven.ArtifactDownloadError(
            f"Maven artifact {art.coords} could not be downloaded from {url}: {exc}. "
            "Is Maven Central (or E5PLUGIN_MAVEN_REPO) reachable from this machine?"
        ) from exc
    actual = _sha256(dest)
    if actual != art.sha256:
        dest.unlink(missing_ok=True)
        raise maven.ArtifactDownloadError(f"Maven artifact {art.coords}: sha256 mismatch ({actual}); deleted.")
    return dest


# ---- assembly ---------------------------------------------------------------------------------------------------
def _unzip(archive: Path, dest: Path, strip_top: bool = True) -> None:
    """Extract keeping Unix permission bits (zipfile drops them), optionally without the top-level folder."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            if strip_top:
                name = name.split("/", 1)[1] if "/" in name else ""
            if not name:
                continue
            target = dest / name
            if not target.resolve().is_relative_to(dest.resolve()):
                raise AssemblyError(f"{archive}: unsafe entry {info.filename!r}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def _install_plugin(home: Path, archive: Path, java_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSEARCH_", "JAVA_TOOL_OPTIONS"))}
    env.update(OPENSEARCH_JAVA_HOME=str(java_home), JAVA_HOME=str(java_home), OPENSEARCH_PATH_CONF=str(home / "config"))
    cmd = [str(home / "bin" / "opensearch-plugin"), "install", "--batch", archive.resolve().as_uri()]
    proc = subprocess.run(cmd, check=False, env=env, cwd=home, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssemblyError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _place_natives(rel: Release, cache_dir: Path, home: Path) -> None:
    """Unpack libtorch and the DJL JNI into the folder DJL checks before it would download anything."""
    folder = home / ML_CACHE_SEED / "pytorch" / rel.ml_cache_folder
    folder.mkdir(parents=True)
    with zipfile.ZipFile(fetch(rel.pytorch_native, cache_dir)) as zf:
        libs = [i for i in zf.infolist() if i.filename.startswith("pytorch/") and not i.is_dir()]
        for info in libs:
            with zf.open(info) as src, open(folder / Path(info.filename).name, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
    if not (folder / "libtorch.so").is_file():
        raise AssemblyError(f"{rel.pytorch_native.coords} holds no libtorch.so")
    with zipfile.ZipFile(fetch(rel.pytorch_jni, cache_dir)) as zf:
        try:
            data = zf.read(rel.jni_entry)
        except KeyError:
            raise AssemblyError(f"{rel.pytorch_jni.coords} holds no {rel.jni_entry}") from None
    (folder / f"{rel.djl_version}-libdjl_torch.so").write_bytes(data)


def _check_home(rel: Release, home: Path) -> None:
    missing = [m for m in REQUIRED_MODULES if not (home / "modules" / m / "plugin-descriptor.properties").is_file()]
    if missing:
        raise AssemblyError(f"{rel.distribution.coords} lacks modules: {', '.join(missing)}")
    engine_jar = home / "plugins" / "opensearch-ml" / f"pytorch-engine-{rel.djl_version}.jar"
    if not engine_jar.is_file():
        raise AssemblyError(f"ml-commons does not bundle DJL {rel.djl_version} ({engine_jar} missing)")


def assemble(cache_dir: Path, version: str = DEFAULT_VERSION, progress: Callable[[str], None] | None = None) -> Path:
    """Build (once) and return an OpenSearch home with job-scheduler, ml-commons, k-NN and neural-search.

    Built in a temporary folder and renamed into place, so an interrupted build leaves nothing half-made;
    a file lock serialises concurrent callers.
    """
    say = progress or (lambda _msg: None)
    rel = release(version)
    root = Path(cache_dir).expanduser() / "opensearch"
    home = root / f"opensearch-{version}"
    if (home / MARKER).is_file():
        return home
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / MARKER).is_file():
            return home
        for stale in root.glob(f".build-{version}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        java_home = find_java_home(MIN_JAVA)
        say(f"downloading OpenSearch {version} and plugins from {maven.repository_url()}")
        dist = fetch(rel.distribution, cache_dir)
        plugins = [fetch(p, cache_dir) for p in rel.plugins]
        work = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=root))
        try:
            tmp_home = work / "home"
            say(f"unpacking {dist.name}")
            _unzip(dist, tmp_home)
            for art, path in zip(rel.plugins, plugins, strict=True):
                say(f"installing plugin {art.artifact} {art.version}")
                _install_plugin(tmp_home, path, java_home)
            _check_home(rel, tmp_home)
            if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
                say(f"placing PyTorch {rel.pytorch_version} natives for DJL {rel.djl_version}")
                _place_natives(rel, cache_dir, tmp_home)
            else:
                say("no PyTorch natives for this platform: local ML models will not deploy")
            marker = {
                "version": version,
                "java_home": str(java_home),
                "artifacts": [a.coords for a in (rel.distribution, *rel.plugins, rel.pytorch_native, rel.pytorch_jni)],
                "ml_cache_folder": rel.ml_cache_folder,
                "seconds": round(time.monotonic() - started, 1),
            }
            (tmp_home / MARKER).write_text(json.dumps(marker, indent=2))
            if home.exists():  # a leftover without marker (should not happen): replace it
                shutil.rmtree(home)
            os.rename(tmp_home, home)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        say(f"OpenSearch {version} assembled in {time.monotonic() - started:.0f}s at {home}")
        return home


# ---- nodes ------------------------------------------------------------------------------------------------------
def _heap_bytes(heap: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg])", heap.strip().lower())
    if not match:
        raise ValueError(f"heap must look like '512m' or '1g', not {heap!r}")
    return int(match.group(1)) << {"k": 10, "m": 20, "g": 30}[match.group(2)]


def _link_tree(src: Path, dest: Path) -> None:
    """Mirror ``src`` into ``dest`` with hard links (a copy across file systems); existing files are kept."""
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def _write_config(home: Path, workdir: Path) -> None:
    """Copy home/config into the workdir, pointing the JVM's relative log and dump paths at the workdir."""
    config = workdir / "config"
    if config.exists():
        return
    shutil.copytree(home / "config", config)
    logs = workdir / "logs"
    jvm = config / "jvm.options"
    text = jvm.read_text()
    text = text.replace("file=logs/gc.log", f"file={logs}/gc.log")
    text = text.replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={logs}")
    text = text.replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={logs}/")
    jvm.write_text(text)


def node(
    cache_dir: Path,
    *,
    version: str = DEFAULT_VERSION,
    name: str = "opensearch",
    heap: str = "1g",
    workdir: Path | None = None,
    http_port: int = 0,
    extra_settings: dict[str, str] | None = None,
) -> Node:
    """A configured, not yet started node (security plugin absent, DJL offline, natives in place).
    ``extra_settings`` are added as ``-E`` node settings (e.g. a tiny write queue for fault tests).

    ``workdir`` defaults to a new temporary folder; the caller owns it.
    """
    if _heap_bytes(heap) > MAX_HEAP_BYTES:
        raise ValueError(f"heap {heap} is above the 2g this machine's tests can afford")
    home = assemble(cache_dir, version)
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"e5plugin-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "logs", "tmp"):
        (workdir / sub).mkdir(exist_ok=True)
    _write_config(home, workdir)
    seed = home / ML_CACHE_SEED
    if seed.is_dir():
        _link_tree(seed, workdir / "data" / "ml_cache")
    return Node(
        name=name,
        engine="opensearch",
        version=version,
        home=home,
        java_home=find_java_home(MIN_JAVA),
        workdir=workdir,
        http_port=http_port,
        heap=heap,
        settings={
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "action.destructive_requires_name": "false",
            **(extra_settings or {}),
        },
        # DJL never downloads: a missing libtorch fails the deploy at once with "Offline model is enabled."
        java_opts=["-Dai.djl.offline=true"],
        extra_env={"OPENSEARCH_TMPDIR": str(workdir / "tmp"), "DJL_OFFLINE": "true"},
    )
