"""Long documents are split into passages that cover the whole text and each fit the model (pure functions)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e5plugin.bodies import elasticsearch as es
from e5plugin.bodies import opensearch as os_
from e5plugin.errors import ConfigurationError
from e5plugin.models import KNOWN_MODELS, resolve_model
from e5plugin.prefixes import Mode, plan_prefixes
from e5plugin.search import IndexSetup
from e5plugin.tasks.chunking import Chunker, ChunkingSettings, load_tokenizer, split_text, text_budget, windows

E5 = KNOWN_MODELS["intfloat/e5-small-v2"]


@pytest.fixture(scope="module")
def minilm_spec():
    from tiny_models import minilm_path

    return resolve_model(str(minilm_path()))


@pytest.fixture(scope="module")
def tokenizer(minilm_spec):
    return load_tokenizer(minilm_spec)


def _covers(spans: list[tuple[int, int]], n: int) -> bool:
    covered = [False] * n
    for start, end in spans:
        for i in range(start, end):
            covered[i] = True
    return all(covered)


@given(
    n=st.integers(0, 400),
    size=st.integers(1, 60),
    overlap_share=st.floats(0, 0.95),
    starts=st.lists(st.booleans(), min_size=400, max_size=400),
)
@settings(max_examples=200, deadline=None)
def test_windows_cover_every_token_overlap_and_never_exceed_the_size(n, size, overlap_share, starts):
    overlap = min(int(size * overlap_share), size - 1)
    spans = windows(n, size, overlap, [True, *starts[1:n]] if n else None)
    assert _covers(spans, n)
    assert all(0 < end - start <= size for start, end in spans)
    assert all(b[0] > a[0] and b[0] <= a[1] for a, b in itertools.pairwise(spans))  # forward, no gaps
    if n:
        assert spans[0][0] == 0 and spans[-1][1] == n


def test_windows_share_the_overlap_without_word_snapping():
    assert windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert windows(3, 4, 1) == [(0, 3)]
    with pytest.raises(ValueError):
        windows(10, 4, 4)


def test_a_short_text_is_one_passage_equal_to_the_text(tokenizer):
    text = "  Cats sleep most of the day.  "
    [passage] = split_text(text, tokenizer, chunk_size=50, overlap=5, max_length=64, prefix="passage: ")
    assert passage.text == text and (passage.start, passage.end) == (0, len(text))


def test_long_text_passages_are_slices_that_cover_it_and_fit_the_model(tokenizer):
    words = [f"token{i} unbelievably" for i in range(300)]  # several word pieces per word
    text = "Start. " + " ".join(words) + " The tail fact: the lighthouse key is blue."
    prefix, max_length = "passage: ", 64
    passages = split_text(text, tokenizer, chunk_size=40, overlap=8, max_length=max_length, prefix=prefix)
    assert len(passages) > 10
    for p in passages:
        assert text[p.start : p.end] == p.text and p.tokens <= 40
        assert len(tokenizer.encode(prefix + p.text).ids) <= max_length  # nothing the model would cut off
        assert not tokenizer.encode(p.text, add_special_tokens=False).tokens[0].startswith("##")  # no cut words
    covered = [False] * len(text)
    for p in passages:
        covered[p.start : p.end] = [True] * (p.end - p.start)
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())  # every character is in a passage
    assert "lighthouse key is blue" in passages[-1].text
    assert all(a.end > b.start for a, b in itertools.pairwise(passages))  # consecutive ones overlap


def test_budget_reserves_prefix_and_special_tokens(minilm_spec, tokenizer):
    assert text_budget(tokenizer, 256, "") == 254  # [CLS] ... [SEP]
    assert text_budget(tokenizer, 256, "passage: ") == 252  # and "passage", ":"
    chunker = Chunker(minilm_spec, ChunkingSettings(), "")
    assert chunker.settings.chunk_size == 254 == chunker.budget
    assert chunker.settings.overlap == 64


def test_settings_refuse_what_the_model_cannot_read(minilm_spec):
    with pytest.raises(ConfigurationError, match="more than the model reads: 254 tokens"):
        Chunker(minilm_spec, ChunkingSettings(chunk_size=300), "")
    with pytest.raises(ConfigurationError, match="smaller than the chunk size"):
        Chunker(minilm_spec, ChunkingSettings(chunk_size=32, overlap=32), "")
    with pytest.raises(ConfigurationError, match="plain top-level field"):
        Chunker(minilm_spec, ChunkingSettings(chunk_size=32, overlap=4, field="a.b"), "")


def test_chunking_is_recorded_in_the_index_meta():
    plan = plan_prefixes(E5, Mode.CLIENT, False)
    settings = ChunkingSettings(chunk_size=128, overlap=16)
    setup = IndexSetup(E5, Mode.CLIENT, plan, "text", "passages.embedding", chunking=settings)
    assert IndexSetup.from_meta(setup.to_meta()).chunking == settings
    plain = IndexSetup(E5, Mode.CLIENT, plan, "text", "embedding")
    assert "chunking" not in plain.to_meta() and IndexSetup.from_meta(plain.to_meta()).chunking is None


@pytest.mark.parametrize("module", [es, os_], ids=["elasticsearch", "opensearch"])
def test_index_bodies_nest_the_passages_and_map_keywords(module):
    body = module.index_body(E5, vector_field="passages.embedding", nested="passages", keyword_fields=("lang",))
    props = body["mappings"]["properties"]
    passages = props["passages"]
    assert passages["type"] == "nested"
    assert set(passages["properties"]) == {"embedding", "text", "start", "end"}
    assert props["lang"] == {"type": "keyword"} and props["text"] == {"type": "text"}
    assert "embedding" not in props


def test_opensearch_chunked_pipeline_embeds_every_passage_prefix_exactly_once():
    by_cluster = plan_prefixes(E5, Mode.SERVER, True)
    body = os_.chunked_pipeline_body("m", by_cluster, text_field="text", passages_field="passages", vector_field="v")
    embed = next(p["text_embedding"] for p in body["processors"] if "text_embedding" in p)
    assert embed["field_map"] == {"passages": {"text": "v"}}
    assert not any("PASSAGE" in str(p) or "_e5plugin_passage" in str(p) for p in body["processors"])
    by_pipeline = plan_prefixes(E5, Mode.SERVER, False)
    body = os_.chunked_pipeline_body("m", by_pipeline, text_field="text", passages_field="passages", vector_field="v")
    embed = next(p["text_embedding"] for p in body["processors"] if "text_embedding" in p)
    assert embed["field_map"] == {"passages": {"_e5plugin_passage": "v"}}
    scripts = [p["script"]["params"] for p in body["processors"] if "script" in p]
    assert scripts[1]["prefix"] == "passage: " and scripts[0]["prefix"] == ""  # validation adds nothing
