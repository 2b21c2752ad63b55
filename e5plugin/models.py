"""Model specs: the facts e5plugin needs about an embedding model, from a table of known models or its files.

A spec never guesses: known hub ids come from the table below (checked against the models' configs); anything else
is read from the checkpoint's own ``config.json`` and sentence-transformers files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import UnknownModelError

INSTRUCT_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


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
    return ModelSpec(model_id, dims, model_type, 512, "query: ", "passage: ", "mean", True, lower)


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
        ),
        ModelSpec("sentence-transformers/paraphrase-albert-small-v2", 768, "albert", 100, normalize=False),
        ModelSpec("sentence-transformers/all-MiniLM-L6-v2", 384, "bert", 256, do_lower_case=True),
    ]
}


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
    prompts = _read_json(directory / "config_sentence_transformers.json").get("prompts", {})
    known = KNOWN_MODELS.get(model_id or "")
    query_prefix = prompts.get("query", known.query_prefix if known else "")
    passage_prefix = prompts.get("passage", prompts.get("document", known.passage_prefix if known else ""))
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
    )


def resolve_model(
    model: str,
    *,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
    revision: str | None = None,
    download: bool = False,
) -> ModelSpec:
    """A spec for a hub id or a local directory; prefixes may be overridden.

    Local directories are inspected. Known hub ids come from the table; with ``download=True`` the checkpoint
    is fetched from the hub (``huggingface_hub``) and inspected. Unknown hub ids need the download.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        spec = inspect_directory(path)
    elif download:
        spec = inspect_directory(download_model(model, revision=revision), model_id=model)
        spec = replace(spec, model_id=model)
    elif model in KNOWN_MODELS:
        spec = replace(KNOWN_MODELS[model], revision=revision)
    else:
        known = ", ".join(sorted(KNOWN_MODELS))
        raise UnknownModelError(
            f"Unknown model {model!r}: not a local directory and not a known hub id ({known}). "
            "Pass a local directory, or let e5plugin download it from the hub to inspect its config."
        )
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
    return replace(local, query_prefix=spec.query_prefix, passage_prefix=spec.passage_prefix)
