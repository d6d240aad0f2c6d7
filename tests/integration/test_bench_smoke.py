"""Both benchmarks end to end on tiny inputs: a synthesised LoCoMo-shaped conversation and a few dozen turns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.retrieval import budget_coverage, evidence_of, turns_of
from tests.support.http_server import Route, serve

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
CATEGORY_KEYS = (
    "recall_multi_hop",
    "recall_temporal",
    "recall_open_domain",
    "recall_single_hop",
    "recall_adversarial",
)
SESSIONS = [
    [
        ("Ada", "I adopted a grey kitten called Pixel from the shelter yesterday."),
        ("Ben", "Congratulations! I started learning the cello last week."),
        ("Ada", "Pixel already sleeps on my keyboard every afternoon."),
        ("Ben", "My teacher says my bowing improved a lot."),
        ("Ada", "I am running the Oslo half marathon in September."),
        ("Ben", "Good luck, I will cheer for you from the finish line."),
    ],
    [
        ("Ada", "Pixel knocked my coffee over this morning."),
        ("Ben", "I bought a new cello bow from a shop in Bergen."),
        ("Ada", "I ran twenty kilometres on Sunday to train."),
        ("Ben", "My sister is visiting from Tromso next week."),
        ("Ada", "I painted the kitchen a pale green."),
        ("Ben", "The orchestra rehearsal moved to Thursdays."),
    ],
    [
        ("Ada", "The vet said Pixel is healthy and growing."),
        ("Ben", "I played my first concert with the orchestra."),
        ("Ada", "I finished the Oslo half marathon in two hours."),
        ("Ben", "My sister loved the northern lights."),
        ("Ada", "The kitchen looks brighter now."),
        ("Ben", "Next I want to learn a Bach suite."),
    ],
]
"""Three sessions that say different things (the same lines in each were merged by write-time dedup once,
which made the benchmark's recall depend on it)."""


def _conversation() -> dict[str, Any]:
    """Three sessions of six short turns; one image turn; questions with bad and missing evidence."""
    conversation: dict[str, Any] = {"speaker_a": "Ada", "speaker_b": "Ben"}
    for s, lines in enumerate(SESSIONS, 1):
        conversation[f"session_{s}_date_time"] = f"10:0{s} am on {s} May, 2023"
        conversation[f"session_{s}"] = [
            {"speaker": who, "dia_id": f"D{s}:{t}", "text": text} for t, (who, text) in enumerate(lines, 1)
        ]
    conversation["session_2"][0]["blip_caption"] = "a photo of a grey kitten on a laptop"
    conversation["session_4_date_time"] = "9:00 am on 9 May, 2023"  # a date without a body, as in conv-26
    qa = [
        {
            "question": "What is the name of Ada's kitten?",
            "answer": "Pixel",
            "evidence": ["D1:1"],
            "category": 4,
        },
        {
            "question": "When is Ada's half marathon?",
            "answer": "September",
            "evidence": ["D1:5"],
            "category": 2,
        },
        {
            "question": "What instrument and pet are mentioned?",
            "answer": "cello, kitten",
            "evidence": ["D1:1", "D2:2", "D", "D9:99"],
            "category": 1,
        },
        {
            "question": "What does Ben think of the marathon?",
            "answer": "cheer",
            "evidence": ["D1:6"],
            "category": 3,
        },
        {
            "question": "What did Ben adopt?",
            "adversarial_answer": "a kitten",
            "evidence": ["D1:1"],
            "category": 5,
        },
        {
            "question": "Which question has no valid evidence?",
            "answer": "-",
            "evidence": ["D:1:2"],
            "category": 4,
        },
    ]
    return {"sample_id": "conv-smoke", "conversation": conversation, "qa": qa}


def _run(args: list[str], home: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEMOS_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    figures: dict[str, Any] = json.loads(last)
    return figures


def test_retrieval_benchmark_on_a_synthesised_conversation(tmp_path: Path) -> None:
    path = tmp_path / "locomo-smoke.json"
    path.write_text(json.dumps([_conversation()]), encoding="utf-8")
    chart = tmp_path / "retrieval.png"
    figures = _run(
        ["bench.retrieval", str(path), "--relativity", "default,0", "--chart", str(chart)], tmp_path / "home"
    )
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("recall_at_1000w", "search_p50_ms", "search_p95_ms", *CATEGORY_KEYS, "recall_at_1000w_rel0"):
        assert key in figures, key
    assert figures["turns"] == 18
    assert figures["questions"] == 5 and figures["questions_skipped"] == 1
    assert 0 < figures["search_p50_ms"] <= figures["search_p95_ms"]
    # the whole conversation fits in 1,000 words, so without a threshold every evidence turn is covered
    assert figures["recall_at_1000w_rel0"] == 1.0
    assert 0.0 <= figures["recall_at_1000w"] <= 1.0
    assert figures["mean_words_rel0"] <= 1000


def test_retrieval_benchmark_reuses_an_ingested_home(tmp_path: Path) -> None:
    path = tmp_path / "locomo-smoke.json"
    path.write_text(json.dumps([_conversation()]), encoding="utf-8")
    args = ["bench.retrieval", str(path), "--relativity", "0", "--no-loo", "--home", str(tmp_path / "kept")]
    first = _run(args, tmp_path / "home")
    second = _run(args, tmp_path / "home")
    assert first["turns"] == 18 and first["memories"] > 0
    assert second["turns"] == 0 and second["memories"] == 0  # nothing added again: only searched
    assert second["recall_at_1000w"] == first["recall_at_1000w"] == 1.0
    assert second["questions"] == first["questions"] == 5


def test_retrieval_benchmark_in_fine_mode_keeps_its_own_cubes(tmp_path: Path) -> None:
    """``--mode fine`` (the default) adds through the extractor (the rules, offline) with speakers as names,
    its windows kept; ``fast`` has cubes of its own, so it adds its windows again on the same home, and
    ``fine-only`` retires the windows (fewer memories than fine)."""
    path = tmp_path / "locomo-smoke.json"
    path.write_text(json.dumps([_conversation()]), encoding="utf-8")
    home = ["--relativity", "0", "--no-loo", "--home", str(tmp_path / "kept")]
    fine = _run(["bench.retrieval", str(path), *home], tmp_path / "home")
    fast = _run(["bench.retrieval", str(path), "--mode", "fast", *home], tmp_path / "home")
    only = _run(["bench.retrieval", str(path), "--mode", "fine-only", *home], tmp_path / "home")
    assert (fine["mode"], fast["mode"], only["mode"]) == ("fine", "fast", "fine-only")
    assert fine["turns"] == fast["turns"] == only["turns"] == 18
    assert fine["memories"] > only["memories"] and fine["memories"] > fast["memories"]  # windows beside sentences
    assert 0.0 < fine["recall_at_1000w"] <= 1.0


def test_retrieval_benchmark_measures_a_reranker_served_on_loopback(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body)
        seen.append(request)
        scores = [{"index": i, "relevance_score": 0.5} for i in range(len(request["documents"]))]
        return 200, "application/json", json.dumps({"results": scores}).encode()

    path = tmp_path / "locomo-smoke.json"
    path.write_text(json.dumps([_conversation()]), encoding="utf-8")
    with serve() as server:
        server.routes["/rerank"] = Route(handler=handle)
        url = f"http://127.0.0.1:{server.server_address[1]}/rerank?model=cross"
        figures = _run(["bench.retrieval", str(path), "--relativity", "0", "--chart", "", "--reranker", url,
                        "--grid", "rerank_weight=0,1"], tmp_path / "home")
    assert figures["reranker"] == url
    assert figures["settings_scored"] == 3  # the default weight 0.5, then 0 (off) and 1
    assert figures["loo_recall"] == figures["recall_at_1000w"] == 1.0  # one conversation fits the budget
    questions = {q["question"] for q in _conversation()["qa"]}
    asked = {r["query"] for r in seen}
    assert asked == questions - {"Which question has no valid evidence?"}  # that one is skipped, not searched
    assert {r["model"] for r in seen} == {"cross"}
    # every scored question was asked twice at least: once by its API search, once while collecting candidates
    assert all(sum(r["query"] == q for r in seen) >= 2 for q in asked)


def test_ingest_benchmark_on_a_few_dozen_turns(tmp_path: Path) -> None:
    chart = tmp_path / "ingest.png"
    figures = _run(
        ["bench.ingest", "--turns", "36", "--session-turns", "12", "--sessions", "3", "--chart", str(chart)],
        tmp_path / "h",
    )
    for key in ("turns_per_s", "ingest_turns_per_s", "embedder_raw_per_s", "ratio"):
        assert figures[key] > 0, key
    assert figures["turns"] == 36 and figures["data"] == "synthetic"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures["turns_not_searchable"] == 0
    assert figures["texts_embedded"] >= figures["memories"] > 0
    assert figures["ratio"] < 2.0  # the pipeline cannot beat its own embedder by much


def test_ingest_benchmark_on_locomo_shaped_conversations(tmp_path: Path) -> None:
    path = tmp_path / "locomo-smoke.json"
    path.write_text(json.dumps([_conversation()]), encoding="utf-8")
    figures = _run(["bench.ingest", "--locomo", str(path), "--chart", ""], tmp_path / "h")
    assert figures["data"] == "locomo" and figures["turns"] == 18 and figures["turns_per_s"] > 0
    assert figures["turns_not_searchable"] == 0


def test_search_benchmark_at_a_small_size(tmp_path: Path) -> None:
    # 25k in one cube crosses the ANN threshold (20k), so the HNSW path, its recall and the saved
    # index are exercised; the spread scenario stays exact
    path = tmp_path / "locomo-smoke.json"
    path.write_text(json.dumps([_conversation()]), encoding="utf-8")
    chart = tmp_path / "search.png"
    figures = _run(
        ["bench.search", "--sizes", "25000", "--queries", "12", "--cubes", "5", "--dir", str(tmp_path),
         "--locomo", str(path), "--chart", str(chart)],
        tmp_path / "h",
    )  # fmt: skip
    assert figures["locomo_cubes"] == 1 and figures["locomo_questions"] == 6
    assert 0 < figures["full_p50_ms_locomo"] <= figures["full_p95_ms_locomo"]
    assert 0 < figures["full_p50_ms_locomo_k50"] <= figures["full_p95_ms_locomo_k50"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures["ann_25k"] is True and figures["ann_25k_5cubes"] is False
    assert figures["recall_at_10_25k"] >= 0.8  # structured vectors: HNSW must find most true neighbours
    assert 0 < figures["search_p50_ms_25k"] <= figures["p50_ms_25k"]  # embedding is part of the latency
    assert 0 < figures["full_p50_ms_25k"] <= figures["full_p95_ms_25k"]
    assert figures["p95_ms_1m"] is None and "not run" in figures["p95_ms_1m_reason"]


def test_budget_cuts_the_last_memory_and_skips_malformed_evidence() -> None:
    turns = turns_of(_conversation()["conversation"])
    contents = {t.dia_id: t.content for t in turns}
    assert len(turns) == 18 and turns[6].content.endswith(
        "[shares an image: a photo of a grey kitten on a laptop]"
    )
    first_text = f"[t] user: {contents['D1:1']}"
    first: dict[str, Any] = {"memory": first_text, "metadata": {"sources": [{"message_id": "D1:1"}]}}
    both: dict[str, Any] = {
        "memory": f"{contents['D1:2']}\n{contents['D1:3']}",
        "metadata": {"sources": [{"message_id": "D1:2"}, {"message_id": "D1:3"}]},
    }
    words = len(first_text.split())
    cut = budget_coverage([first, both], contents, budget_words=words + len(contents["D1:2"].split()))
    assert cut.covered == {"D1:1", "D1:2"}  # D1:3 was cut off by the budget
    assert budget_coverage([first, both], contents, budget_words=words - 1).covered == set()
    assert evidence_of({"evidence": ["D1:1", "D", "D9:99", "D1:1"]}, contents) == ["D1:1"]
