"""A minimal ONNX ModelProto writer (protobuf wire format by hand) and the e5 encoder graph built with it.

The ``onnx`` package is not a dependency: the few messages the encoder needs (model, graph, node,
attribute, tensor, value info) are written field by field from onnx.proto's field numbers. The graph
takes word+position embeddings ``x`` [B, T, H] and an additive attention mask ``mask_bias`` [B, T]
and returns the last hidden states; its matmuls are ``com.microsoft.MatMulNBits`` over the model's
own 4-bit blocks (zero point 8, block 32), so the 4-bit weights are packed once, when the session loads.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from memory_store.embedding.e5_weights import QK, E5Weights, Q4Tensor

__all__ = ["encoder_model"]

logger = logging.getLogger(__name__)

_FLOAT, _UINT8, _INT64 = 1, 2, 7
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7
_NP_TYPES = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint8): _UINT8, np.dtype(np.int64): _INT64}


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def _tensor(name: str, array: npt.NDArray[np.generic]) -> bytes:
    array = np.ascontiguousarray(array)
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, _NP_TYPES[array.dtype]) + _str(8, name) + _bytes(9, array.tobytes())


def _attribute(name: str, value: int | float | list[int]) -> bytes:
    if isinstance(value, list):
        return _str(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)
    if isinstance(value, float):
        return _str(1, name) + _varint(2 << 3 | 5) + struct.pack("<f", value) + _int(20, _ATTR_FLOAT)
    return _str(1, name) + _int(3, value) + _int(20, _ATTR_INT)


def _value_info(name: str, elem_type: int, dims: Iterable[int | str]) -> bytes:
    shape = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self._count = 0

    def const(self, name: str, array: npt.NDArray[np.generic]) -> str:
        self.initializers.append(_tensor(name, array))
        return name

    def op(
        self,
        op_type: str,
        inputs: list[str],
        outputs: int = 1,
        domain: str = "",
        names: list[str] | None = None,
        **attrs: int | float | list[int],
    ) -> list[str]:
        self._count += 1
        names = names or [f"{op_type.lower()}_{self._count}_{i}" for i in range(outputs)]
        node = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in names)
        node += _str(3, f"n{self._count}") + _str(4, op_type)
        node += b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())
        if domain:
            node += _str(7, domain)
        self.nodes.append(node)
        return names

    def one(self, op_type: str, inputs: list[str], domain: str = "", **attrs: int | float | list[int]) -> str:
        return self.op(op_type, inputs, 1, domain, None, **attrs)[0]

    def matmul4(self, x: str, name: str, weights: list[Q4Tensor], bias: npt.NDArray[np.float32]) -> str:
        """x @ W.T + bias for 4-bit W (several stacked by rows), int8 activations per block (level 4)."""
        packed = np.concatenate([w.packed_sequential() for w in weights])
        scales = np.concatenate([w.scales for w in weights]).reshape(-1)
        rows, blocks, _ = packed.shape
        inputs = [x, self.const(f"{name}.q", packed), self.const(f"{name}.s", scales), "", ""]
        inputs.append(self.const(f"{name}.b", bias))
        return self.one(
            "MatMulNBits",
            inputs,
            "com.microsoft",
            K=blocks * QK,
            N=rows,
            bits=4,
            block_size=QK,
            accuracy_level=4,
        )

    def model(self, inputs: list[bytes], outputs: list[bytes]) -> bytes:
        graph = b"".join(_bytes(1, n) for n in self.nodes) + _str(2, "e5_encoder")
        graph += b"".join(_bytes(5, t) for t in self.initializers)
        graph += b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
        opsets = _bytes(8, _str(1, "") + _int(2, 17)) + _bytes(8, _str(1, "com.microsoft") + _int(2, 1))
        return _int(1, 8) + _str(2, "memos-stream") + _bytes(7, graph) + opsets


def encoder_model(w: E5Weights) -> bytes:
    """The serialized ONNX encoder for ``w`` (about 14 MB: the 4-bit layers, no word table)."""
    g = _Graph()
    hidden, heads = w.hidden, w.heads
    head_dim = hidden // heads
    split4 = g.const("shape_bthd", np.array([0, 0, heads, head_dim], np.int64))
    merge = g.const("shape_bth", np.array([0, 0, hidden], np.int64))
    scale = g.const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    mask = g.one("Unsqueeze", ["mask_bias", g.const("axes_1_2", np.array([1, 2], np.int64))])
    eps = float(w.eps)

    def norm(x: str, prefix: str) -> str:
        gamma, beta = (
            g.const(f"{prefix}.w", w.f32(f"{prefix}.w")),
            g.const(f"{prefix}.b", w.f32(f"{prefix}.b")),
        )
        return g.one("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)

    x = norm("x", "emb.ln")
    for n in range(w.layers):
        p = f"l{n}."
        qkv = g.matmul4(
            x,
            p + "qkv",
            [w.q4(p + "q.w"), w.q4(p + "k.w"), w.q4(p + "v.w")],
            np.concatenate([w.f32(p + "q.b"), w.f32(p + "k.b"), w.f32(p + "v.b")]),
        )
        sizes = g.const(p + "split", np.array([hidden] * 3, np.int64))
        q, k, v = g.op("Split", [qkv, sizes], 3, axis=-1)
        q = g.one("Transpose", [g.one("Reshape", [q, split4])], perm=[0, 2, 1, 3])
        k = g.one("Transpose", [g.one("Reshape", [k, split4])], perm=[0, 2, 3, 1])
        v = g.one("Transpose", [g.one("Reshape", [v, split4])], perm=[0, 2, 1, 3])
        scores = g.one("Add", [g.one("Mul", [g.one("MatMul", [q, k]), scale]), mask])
        context = g.one("MatMul", [g.one("Softmax", [scores], axis=-1), v])
        context = g.one("Reshape", [g.one("Transpose", [context], perm=[0, 2, 1, 3]), merge])
        attended = g.matmul4(context, p + "ao", [w.q4(p + "ao.w")], w.f32(p + "ao.b"))
        x = norm(g.one("Add", [x, attended]), p + "aln")
        inner = g.one(
            "Gelu", [g.matmul4(x, p + "fi", [w.q4(p + "fi.w")], w.f32(p + "fi.b"))], "com.microsoft"
        )
        x = norm(
            g.one("Add", [x, g.matmul4(inner, p + "fo", [w.q4(p + "fo.w")], w.f32(p + "fo.b"))]), p + "oln"
        )
    g.op("Identity", [x], names=["hidden"])
    inputs = [_value_info("x", _FLOAT, ["B", "T", hidden]), _value_info("mask_bias", _FLOAT, ["B", "T"])]
    return g.model(inputs, [_value_info("hidden", _FLOAT, ["B", "T", hidden])])
