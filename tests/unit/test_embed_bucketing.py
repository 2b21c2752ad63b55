"""Length-bucketed encoding: texts ordered by token count before batching give the same vectors, in input order."""

from __future__ import annotations

import numpy as np

from e5plugin.embed import Embedder
from e5plugin.models import resolve_model


def test_bucketed_encoding_matches_plain_encoding_in_input_order(tiny_bert) -> None:
    embedder = Embedder(resolve_model(str(tiny_bert)), batch_size=4)
    texts = [("the search engine " * (i % 7 + 1)).strip() for i in range(23)] + ["a"]
    bucketed = embedder.encode(texts)
    embedder.bucketing = False
    plain = embedder.encode(texts)
    assert bucketed.shape == (24, embedder.dims) and bucketed.dtype == np.float32
    assert np.allclose(bucketed, plain, atol=1e-5)
    single = np.stack([embedder.encode([t])[0] for t in texts[:5]])
    assert np.allclose(bucketed[:5], single, atol=1e-5)


def test_token_lengths_follow_truncation(tiny_bert) -> None:
    embedder = Embedder(resolve_model(str(tiny_bert)))
    short, long = embedder.token_lengths(["search", "search " * 1000])
    assert short == 3 and long == embedder.model.max_seq_length
