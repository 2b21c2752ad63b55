"""Assemble and configure a real Elasticsearch 9.x node from Maven Central's integ-test zip.

``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<v>:zip`` holds the server, the ``transport-netty4``,
``apm``, ``x-pack-core`` and ``x-pack-security`` modules and the CLI tools (keystore, certutil, users). It has no
bundled JDK, no ``rest-root`` (``GET /`` answers 405, so ``client.info()`` fails: readiness is
``GET /_cluster/health``), no painless, no ingest-common, no ML/inference, no rank-rrf and no analysis-common (so the
``.security`` index cannot be created: native users/roles and API keys fail; file-realm users and roles work).
dense_vector and kNN search are in the server and work.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from . import maven
from .java import find_java_home
from .node import Node

GROUP = "org.elasticsearch.distribution.integ-test-zip"
ARTIFACT = "elasticsearch"
DEFAULT_VERSION = "9.5.4"
MIN_JAVA = 21  # Elasticsearch 9.x refuses older runtimes

# Maven Central (as served here) has no .sha1 next to these zips, so ``maven.fetch`` cannot verify them.
# Digests recorded on first download; a version listed here is downloaded and checked against it.
KNOWN_SHA256 = {
    "9.5.4": "d9b0c28e08e499f6510b52ad66ec4bf9cdceab97cc28b3456989b8744b896934",
}

Progress = Callable[[str], None] | None

# Settings every node gets: no disk-watermark surprises on a nearly full dev disk, no security auto-configuration.
BASE_SETTINGS = {
    "cluster.routing.allocation.disk.threshold_enabled": "false",
    "xpack.security.autoconfiguration.enabled": "false",
}
PLAIN_SETTINGS = {"xpack.security.enabled": "false"}
SECURED_SETTINGS = {
    "xpack.security.enabled": "true",
    "xpack.security.http.ssl.enabled": "false",
    "xpack.security.transport.ssl.enabled": "false",
}
TLS_SETTINGS = {
    "xpack.security.enabled": "true",
    "xpack.security.http.ssl.enabled": "true",
    "xpack.security.http.ssl.certificate": "certs/node.crt",
    "xpack.security.http.ssl.key": "certs/node.key",
    "xpack.security.http.ssl.certificate_authorities": "certs/ca.crt",
    "xpack.security.transport.ssl.enabled": "false",
}


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


def fetch_zip(cache_dir: Path, version: str = DEFAULT_VERSION, progress: Progress = None) -> Path:
    """The integ-test zip for ``version``: from ~/.m2 or the cache, else downloaded and verified."""
    expected = KNOWN_SHA256.get(version)
    if expected is None:
        _say(progress, f"fetching {maven.coordinates(GROUP, ARTIFACT, version, 'zip')}")
        return maven.fetch(GROUP, ARTIFACT, version, "zip", cache_dir=cache_dir)
    rel = maven.artifact_path(GROUP, ARTIFACT, version, "zip")
    for path in (Path.home() / ".m2" / "repository" / rel, Path(cache_dir) / "maven" / rel):
        if path.is_file() and _sha256(path) == expected:
            return path
    dest = Path(cache_dir) / "maven" / rel
    url = f"{maven.repository_url()}/{rel}"
    _say(progress, f"downloading {url}")
    try:
        maven._download(url, dest)
    except OSError as exc:  # urllib.error.URLError and HTTPError are OSErrors
        dest.unlink(missing_ok=True)
        raise maven.ArtifactDownloadError(
            f"Maven artifact {maven.coordinates(GROUP, ARTIFACT, version, 'zip')} could not be downloaded "
            f"from {url}: {exc}. Set E5PLUGIN_MAVEN_REPO to a mirror that has it."
        ) from exc
    actual = _sha256(dest)
    if actual != expected:
        dest.unlink(missing_ok=True)
        raise maven.ArtifactDownloadError(f"{url}: sha256 mismatch ({actual} != {expected}); deleted.")
    return dest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: Path, dest: Path) -> None:
    """Unzip keeping the Unix permission bits (zipfile alone drops the executable bit of ``bin/*``)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                raise ValueError(f"{archive}: unsafe member {info.filename!r}")
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(mode):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(zf.read(info).decode(), target)
                continue
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 20)
            if mode & 0o777:
                target.chmod(mode & 0o777)


def home_dir(cache_dir: Path, version: str = DEFAULT_VERSION) -> Path:
    return Path(cache_dir) / "elasticsearch" / f"elasticsearch-{version}"


def assemble(cache_dir: Path, version: str = DEFAULT_VERSION, progress: Progress = None) -> Path:
    """Build (once) and return an Elasticsearch home under ``cache_dir``.

    The home is unpacked in a temporary sibling directory and renamed into place at the end, so a crash never
    leaves a half-built home; calling it again returns the existing one.
    """
    home = home_dir(cache_dir, version)
    if (home / "bin" / "elasticsearch").is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others find the finished home
        if (home / "bin" / "elasticsearch").is_file():
            return home
        for stale in home.parent.glob(f".tmp-elasticsearch-{version}-*"):  # left by a crashed build
            shutil.rmtree(stale, ignore_errors=True)
        archive = fetch_zip(cache_dir, version, progress)
        tmp = Path(tempfile.mkdtemp(dir=home.parent, prefix=f".tmp-elasticsearch-{version}-"))
        try:
            _say(progress, f"unpacking {archive.name}")
            _extract(archive, tmp)
            top = tmp / f"elasticsearch-{version}"
            if not (top / "bin" / "elasticsearch").is_file():
                raise RuntimeError(f"{archive} does not hold elasticsearch-{version}/bin/elasticsearch")
            os.rename(top, home)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _say(progress, f"elasticsearch {version} ready at {home}")
    return home


def _run_tool(home: Path, java_home: Path, config_dir: Path, args: list[str], stdin: str | None = None) -> None:
    """Run one of the home's ``bin/`` CLI tools against ``config_dir``."""
    env = dict(os.environ, ES_JAVA_HOME=str(java_home), JAVA_HOME=str(java_home), ES_PATH_CONF=str(config_dir))
    env.pop("ES_JAVA_OPTS", None)
    result = subprocess.run(
        [str(home / "bin" / args[0]), *args[1:]],
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")


def create_keystore(home: Path, java_home: Path, config_dir: Path, password: str) -> None:
    """Create the node's keystore holding ``bootstrap.password``: the ``elastic`` user's initial password."""
    (config_dir / "elasticsearch.keystore").unlink(missing_ok=True)
    _run_tool(home, java_home, config_dir, ["elasticsearch-keystore", "create"])
    _run_tool(home, java_home, config_dir, ["elasticsearch-keystore", "add", "--stdin", "bootstrap.password"], password)


def add_file_role(node: Node, name: str, *, indices: list[dict], cluster: list[str] | None = None) -> None:
    """Define a role in the node's ``roles.yml`` (file realm; picked up within ~5 s by a running node).

    The integ-test zip cannot create the ``.security`` index (its mapping needs analysis-common's
    ``pattern_capture`` filter), so ``PUT _security/role``, ``_security/user`` and API keys fail there:
    file-based roles and users are the way to get a restricted user on this distribution.
    """
    descriptor = {"cluster": list(cluster or []), "indices": indices}
    with open(node.config_dir / "roles.yml", "a") as fh:  # JSON is YAML flow style
        fh.write(f"\n{json.dumps(name)}: {json.dumps(descriptor)}\n")


def add_file_user(node: Node, username: str, password: str, roles: list[str]) -> None:
    """Add a file-realm user with ``bin/elasticsearch-users`` (picked up within ~5 s by a running node)."""
    args = ["elasticsearch-users", "useradd", username, "-p", password, "-r", ",".join(roles)]
    _run_tool(node.home, node.java_home, node.config_dir, args)


def _openssl(args: list[str], cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


def make_certificates(certs_dir: Path, days: int = 30) -> Path:
    """Write a throw-away CA (``ca.crt``) and a node certificate for 127.0.0.1/localhost; return the CA path."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    ext = certs_dir / "node.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
         "-subj", "/CN=e5plugin test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "node.crt", "-days", str(days), "-extfile", "node.ext"],
    ]  # fmt: skip
    for step in steps:
        _openssl(step, certs_dir)
    for leftover in ("node.csr", "node.ext", "ca.srl", "ca.key"):
        (certs_dir / leftover).unlink(missing_ok=True)
    return certs_dir / "ca.crt"


def node(
    cache_dir: Path,
    *,
    version: str = DEFAULT_VERSION,
    name: str = "elasticsearch",
    heap: str = "1g",
    secured: bool = False,
    tls: bool = False,
    password: str | None = None,
    workdir: Path | None = None,
    http_port: int = 0,
    extra_settings: dict[str, str] | None = None,
) -> Node:
    """A configured, not yet started, single-node Elasticsearch on 127.0.0.1 (``extra_settings``: more ``-E``).

    ``secured``: security on, user ``elastic`` with ``password`` (generated if None) set through the keystore's
    ``bootstrap.password``. ``tls`` (implies ``secured``): HTTPS with a fresh self-signed CA in ``Node.ca_certs``.
    The workdir's config is rebuilt on every call; its data directory is kept.
    """
    cache_dir = Path(cache_dir)
    home = assemble(cache_dir, version)
    java_home = find_java_home(MIN_JAVA)
    workdir = Path(workdir) if workdir is not None else cache_dir / "nodes" / name
    config_dir = workdir / "config"
    shutil.rmtree(config_dir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(home / "config", config_dir)
    jvm_options = config_dir / "jvm.options"  # GC logs go to the logs dir, not the working directory
    jvm_options.write_text(jvm_options.read_text().replace("file=gc.log", f"file={workdir / 'logs' / 'gc.log'}"))

    secured = secured or tls
    settings = dict(BASE_SETTINGS)
    username = ca_certs = None
    if secured:
        password = password or secrets.token_urlsafe(18)
        create_keystore(home, java_home, config_dir, password)
        username = "elastic"
        settings.update(TLS_SETTINGS if tls else SECURED_SETTINGS)
        if tls:
            ca_certs = make_certificates(config_dir / "certs")
    else:
        password = None
        settings.update(PLAIN_SETTINGS)
    settings.update(extra_settings or {})
    return Node(
        name=name,
        engine="elasticsearch",
        version=version,
        home=home,
        java_home=java_home,
        workdir=workdir,
        http_port=http_port,
        heap=heap,
        settings=settings,
        username=username,
        password=password,
        scheme="https" if tls else "http",
        ca_certs=ca_certs,
    )
