"""Retrieval benchmark: LoCoMo evidence recall within a 1,000-word budget, through the MemOS-compatible API.

    python -m bench.retrieval ../shared/data/locomo-dev.json [--limit-conversations N] [--limit-questions N]
        [--top-k 50] [--relativity default,0] [--roles pair|user] [--details out.jsonl] [--home DIR]

``--reranker URL`` configures a reranker (``derivation.reranker_url``) for every search and adds its weight to
the leave-one-out grid (0: off), so a cross-encoder served elsewhere is measured in one command.

``--mode`` is how LoCoMo is added: ``fine`` (the default, as the API's adds: the configured extractor, offline
the rules, its fast windows kept beside; speakers as message names), ``fast`` (windows only) or ``fine-only``
(``derivation.keep_windows`` off: the windows retired as refined, as MemOS does). Each mode has cubes of its own.

``--home DIR`` keeps the data directory: a second run with the same DIR and roles skips the adds (the
cubes are there) and only searches, so trying search constants costs no re-ingest.

Each conversation goes into its own cube of a fresh data directory (a temp dir as $MEMOS_HOME): one
``add_memories`` call per session (fast mode, sync: the API turns async adds into fine ones), every
turn a message "Speaker: text" (image turns add "[shares an image: caption]") with the session date
as ``chat_time`` and its ``dia_id`` as ``message_id``; speaker_a speaks as ``user`` and speaker_b as
``assistant`` (``--roles user`` makes both ``user``: both are people, and on conv-26/30 it measured
within noise of the pair, 0.870 vs 0.862 at relativity 0; the pair stays the default because it also
keeps the two sides of the dialogue apart by role, not only by name). Then every question is one ``search_memories``
call per relativity setting (the first is the headline; ``default`` is the API's own threshold).

Metric (../shared/data/README.md): the returned ``text_mem`` memories (pref/tool/skill buckets are not
counted; fast mode makes none from plain chat, and their number is reported) in rank order until their text
reaches the budget (words split on whitespace; the memory that crosses it is cut there); a memory
covers the turns named by the ``message_id`` of its sources, and a memory that was cut (or is one part
of a split window) only those whose text it still holds verbatim. Recall of a question is the covered
fraction of its evidence turns; ids naming no turn are skipped, and so are questions left without any.
The last line printed is one JSON object of headline figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.charts import retrieval_chart
from bench.retrieval_loo import (
    Candidates,
    EmbeddingCache,
    collect,
    interval,
    leave_one_out,
    mean,
    ranked,
    settings_grid,
)
from bench.retrieval_report import CATEGORIES, Run, figures_of, print_loo, print_table
from memos.api.product_models import APIADDRequest, APISearchRequest
from memos.api.routers.server_router import add_memories, search_memories
from memos.client import default_client, reset_default_client
from schemas.errors import MemorySystemError

__all__ = [
    "CATEGORIES",
    "Coverage",
    "Turn",
    "budget_coverage",
    "evidence_of",
    "main",
    "session_messages",
    "turns_of",
]

logger = logging.getLogger(__name__)

_SESSION = re.compile(r"session_(\d+)")
DEFAULT_GRID = "speaker_share=0,0.3;weight_time=1,1.5;mmr_lambda=0.7,0.8;relation_weights.RELATES=0,0.8"
"""Search-time constants tried by the leave-one-out tuning (every combination)."""
RERANK_GRID = "rerank_weight=0,0.25,0.5,0.75"
"""Added to the grid with ``--reranker`` (0: the reranker's scores change nothing)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One LoCoMo turn as it is added: its id, session, date and message text."""

    dia_id: str
    session: int
    chat_time: str
    speaker: str
    content: str


def turns_of(conversation: Mapping[str, Any]) -> list[Turn]:
    """Every turn of a LoCoMo ``conversation`` dict in session order (sessions without a body are skipped)."""
    sessions = sorted(int(m.group(1)) for k in conversation if (m := _SESSION.fullmatch(k)))
    out: list[Turn] = []
    for n in sessions:
        when = str(conversation.get(f"session_{n}_date_time") or "")
        for turn in conversation[f"session_{n}"] or []:
            content = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                content += f" [shares an image: {turn['blip_caption']}]"
            out.append(Turn(str(turn["dia_id"]), n, when, str(turn["speaker"]), content))
    return out


def session_messages(
    turns: Sequence[Turn], speaker_a: str, *, roles: str = "pair", named: bool = False
) -> list[dict[str, Any]]:
    """OpenAI-style messages of some turns: speaker_a is ``user``, the other ``assistant`` (roles "pair");
    ``named``: the speaker as the message's ``name``, not as a "Speaker: " prefix of its text (fine mode)."""
    return [
        {
            "role": "user" if roles == "user" or t.speaker == speaker_a else "assistant",
            "content": t.content.removeprefix(f"{t.speaker}: ") if named else t.content,
            "chat_time": t.chat_time,
            "message_id": t.dia_id,
            **({"name": t.speaker} if named else {}),
        }
        for t in turns
    ]


def evidence_of(qa: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """The question's evidence ids that name a turn of the conversation (malformed ids are skipped)."""
    ids = set(known)
    return list(dict.fromkeys(str(e) for e in qa.get("evidence") or [] if str(e) in ids))


def _norm(text: str) -> str:
    return " ".join(text.split())


@dataclass(slots=True)
class Coverage:
    """What the budgeted head of a result list covers."""

    covered: set[str] = field(default_factory=set)
    words: int = 0
    memories: int = 0


def budget_coverage(
    memories: Sequence[Mapping[str, Any]], contents: Mapping[str, str], *, budget_words: int = 1000
) -> Coverage:
    """Turns covered by ``memories`` (rank order) within ``budget_words`` words; ``contents``: dia_id -> text."""
    out = Coverage()
    for item in memories:
        left = budget_words - out.words
        if left <= 0:
            break
        words = str(item.get("memory") or "").split()
        if not words:
            continue
        cut = len(words) > left
        kept = " ".join(words[:left])
        meta = item.get("metadata") or {}
        verbatim = cut or "part" in meta
        for source in meta.get("sources") or []:
            turn = source.get("message_id")
            if turn in contents and (not verbatim or _norm(contents[turn]) in kept):
                out.covered.add(turn)
        out.words += min(len(words), left)
        out.memories += 1
    return out


def _ranks(memories: Sequence[Mapping[str, Any]], evidence: Sequence[str]) -> dict[str, int | None]:
    """For the analysis: 1-based rank of the first memory (budget ignored) whose sources name each turn."""
    ranks: dict[str, int | None] = dict.fromkeys(evidence)
    for n, item in enumerate(memories, 1):
        for source in (item.get("metadata") or {}).get("sources") or []:
            turn = source.get("message_id")
            if turn in ranks and ranks[turn] is None:
                ranks[turn] = n
    return ranks


def _ingest(
    sample: Mapping[str, Any], turns: Sequence[Turn], *, user_id: str, cube_id: str, roles: str, mode: str
) -> int:
    """Add every session with ``add_memories`` (sync, in ``mode``); returns the number of memories reported."""
    speaker_a = str(sample["conversation"]["speaker_a"])
    added = 0
    for session in sorted({t.session for t in turns}):
        part = [t for t in turns if t.session == session]
        response = add_memories(
            APIADDRequest(
                user_id=user_id,
                writable_cube_ids=[cube_id],
                session_id=f"{cube_id}:session_{session}",
                async_mode="sync",
                mode="fast" if mode == "fast" else "fine",
                messages=session_messages(part, speaker_a, roles=roles, named=mode != "fast"),
            )
        )
        if response.code != 200:
            raise MemorySystemError(f"add of {cube_id!r} session {session} failed: {response.message}")
        added += len(response.data or [])
    return added


def _marks() -> Path:
    return Path(os.environ["MEMOS_HOME"]) / "bench-retrieval-ingested.json"


def _ingested(roles: str) -> set[str]:
    """Cubes a previous run ingested into this data directory with the same roles (``--home`` reuse)."""
    path = _marks()
    marks = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return {cube for cube, r in marks.items() if r == roles}


def _mark_ingested(cube_id: str, roles: str) -> None:
    path = _marks()
    marks = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    marks[cube_id] = roles
    path.write_text(json.dumps(marks), encoding="utf-8")


def _search(
    question: str, *, user_id: str, cube_id: str, top_k: int, relativity: float | None
) -> tuple[list[dict[str, Any]], int, float]:
    """Text memories in rank order, how many pref/tool/skill memories came too, and the call's latency."""
    fields: dict[str, Any] = {
        "query": question,
        "user_id": user_id,
        "readable_cube_ids": [cube_id],
        "top_k": top_k,
    }
    if relativity is not None:
        fields["relativity"] = relativity
    request = APISearchRequest.model_validate(fields)
    started = time.perf_counter()
    response = search_memories(request)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.code != 200 or response.data is None:
        raise MemorySystemError(f"search {question!r} failed: {response.message}")
    data = response.data
    memories = [m for bucket in data.get("text_mem", []) for m in bucket["memories"]]
    others = sum(
        len(b["memories"]) for key in ("pref_mem", "tool_mem", "skill_mem") for b in data.get(key, [])
    )
    return memories, others, elapsed_ms


def _parse_relativities(text: str) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        out.append((part, None) if part == "default" else (f"rel={float(part):g}", float(part)))
    return out or [("default", None)]


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest and ask every conversation; print the table, return the headline figures."""
    samples = json.loads(Path(args.path).read_text(encoding="utf-8"))[: args.limit_conversations or None]
    runs = [Run(label, rel) for label, rel in _parse_relativities(args.relativity)]
    details = open(args.details, "w", encoding="utf-8") if args.details else None  # noqa: SIM115
    user_id, ingest_s, n_turns, n_memories, skipped = "locomo", 0.0, 0, 0, 0
    runtime = default_client().runtime
    cands: list[Candidates] = []
    contents_of: dict[str, dict[str, str]] = {}
    marked = args.roles if args.mode == "fast" else f"{args.roles}/{args.mode}"  # what --home reuse checks
    done = _ingested(marked)
    try:
        for number, sample in enumerate(samples):
            conversation = sample["conversation"]
            suffix = "" if args.mode == "fast" else f"-{args.mode}"  # each mode's cubes apart
            cube_id = str(sample.get("sample_id") or f"conv-{number}") + suffix
            turns = turns_of(conversation)
            contents = {t.dia_id: t.content for t in turns}
            started = time.perf_counter()
            if cube_id in done:
                logger.warning("cube %s already ingested under --home: searches only", cube_id)
            else:
                n_memories += _ingest(sample, turns, user_id=user_id, cube_id=cube_id, roles=args.roles,
                                      mode=args.mode)
                _mark_ingested(cube_id, marked)
                ingest_s += time.perf_counter() - started
                n_turns += len(turns)  # turns added by this run (the ingest figures)
            contents_of[cube_id] = contents
            for qa in sample["qa"][: args.limit_questions or None]:
                evidence = evidence_of(qa, contents)
                if not evidence:
                    skipped += 1
                    continue
                category = int(qa["category"])
                if args.loo:
                    cands.append(
                        default_client().call(
                            collect(
                                runtime,
                                cube_id,
                                qa["question"],
                                category=category,
                                evidence=evidence,
                                k=args.loo_k,
                            )
                        )
                    )
                record: dict[str, Any] = {
                    "cube": cube_id,
                    "category": category,
                    "question": qa["question"],
                    "evidence": evidence,
                }
                for run in runs:
                    memories, others, ms = _search(
                        qa["question"],
                        user_id=user_id,
                        cube_id=cube_id,
                        top_k=args.top_k,
                        relativity=run.relativity,
                    )
                    cov = budget_coverage(memories, contents, budget_words=args.budget_words)
                    recall = len(cov.covered & set(evidence)) / len(evidence)
                    run.recalls.setdefault(category, []).append(recall)
                    run.latencies.append(ms)
                    run.words.append(cov.words)
                    run.returned.append(len(memories))
                    run.others += others
                    record[run.label] = {
                        "recall": recall,
                        "covered": sorted(cov.covered & set(evidence)),
                        "words": cov.words,
                        "in_budget": cov.memories,
                        "returned": len(memories),
                        "ranks": _ranks(memories, evidence),
                    }
                if details is not None:
                    details.write(json.dumps(record) + "\n")
            logger.info("conversation %s done turns=%d", cube_id, len(turns))
    finally:
        if details is not None:
            details.close()
    print_table(runs, ingest_s=ingest_s, turns=n_turns, memories=n_memories, skipped=skipped, args=args)
    figures = figures_of(runs, ingest_s=ingest_s, turns=n_turns, memories=n_memories, skipped=skipped)
    figures["mode"] = args.mode
    if cands:
        figures.update(_loo(cands, contents_of, runtime, args))
    return figures


def _parse_grid(text: str) -> dict[str, list[Any]]:
    """``name=v1,v2;name2=v3`` -> {name: [values]} (numbers parsed as floats, ints kept whole)."""
    grid: dict[str, list[Any]] = {}
    for part in (p.strip() for p in text.split(";") if p.strip()):
        name, _, values = part.partition("=")
        grid[name.strip()] = [json.loads(v) for v in values.split(",") if v.strip()]
    return grid


def _loo(
    cands: Sequence[Candidates],
    contents_of: Mapping[str, Mapping[str, str]],
    runtime: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Score every setting of the grid on the read candidates; print LOO, in-sample and base figures."""
    base = runtime.search_service.settings
    settings = settings_grid(base, _parse_grid(args.grid))
    scores = np.zeros((len(settings), len(cands)))
    started = time.perf_counter()
    for s, setting in enumerate(settings):
        for q, cand in enumerate(cands):
            memories = ranked(cand, setting, top_k=args.top_k, query_model=runtime.embedder.model_id)
            cov = budget_coverage(memories, contents_of[cand.cube], budget_words=args.budget_words)
            scores[s, q] = len(cov.covered & set(cand.evidence)) / len(cand.evidence)
        print(f"setting {s + 1}/{len(settings)} scored ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)  # progress, not a warning
    elapsed = time.perf_counter() - started
    if args.scores:
        np.savez(
            args.scores,
            scores=scores,
            cubes=np.asarray([c.cube for c in cands]),
            categories=np.asarray([c.category for c in cands]),
            settings=np.asarray([json.dumps(x.model_dump(), default=list) for x in settings]),
        )
    result = leave_one_out(scores, [c.cube for c in cands], [c.category for c in cands], settings)
    print_loo(result, len(settings), elapsed)
    out: dict[str, Any] = {
        "loo_recall": round(mean(result.loo), 4),
        "in_sample_recall": round(mean(result.in_sample), 4),
        "base_recall": round(mean(result.base), 4),
    }
    out["loo_interval"] = [round(x, 4) for x in interval(result.loo)]
    for category, name in CATEGORIES.items():
        out[f"loo_{name}"] = round(mean(result.loo, category), 4)
        out[f"loo_{name}_interval"] = [round(x, 4) for x in interval(result.loo, category)]
        out[f"in_sample_{name}"] = round(mean(result.in_sample, category), 4)
    out["settings_scored"] = len(settings)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="LoCoMo JSON file (e.g. ../shared/data/locomo-dev.json)")
    parser.add_argument("--limit-conversations", type=int, default=0, help="first N conversations (0: all)")
    parser.add_argument("--limit-questions", type=int, default=0, help="first N questions per conversation")
    parser.add_argument(
        "--top-k", type=int, default=50, help="top_k of every search (enough for 1,000 words)"
    )
    parser.add_argument("--budget-words", type=int, default=1000, help="word budget of the returned memories")
    parser.add_argument(
        "--relativity",
        default="default,0",
        help="comma list: 'default' (the API's threshold) or numbers; the first is the headline",
    )
    parser.add_argument(
        "--roles",
        choices=("pair", "user"),
        default="pair",
        help="pair: speaker_a user, speaker_b assistant; user: both user",
    )
    parser.add_argument(
        "--mode", choices=("fine", "fast", "fine-only"), default="fine",
        help="add mode: fine (the API's default: the configured extractor, offline the rules, with speakers as "
        "message names, its windows kept beside), fast (windows only), or fine-only (derivation.keep_windows "
        "off: the windows retired as refined, MemOS's behaviour)",
    )  # fmt: skip
    parser.add_argument("--details", default="", help="write one JSON line per question here (for analysis)")
    parser.add_argument(
        "--home",
        default="",
        help="data directory (default: a fresh temp dir); a directory a previous run filled is reused: "
        "its conversations are not added again, only searched (for trying search constants)",
    )
    parser.add_argument(
        "--no-loo", dest="loo", action="store_false", help="skip the leave-one-conversation-out tuning"
    )
    parser.add_argument("--loo-k", type=int, default=150, help="candidates read per retriever for tuning")
    parser.add_argument("--scores", default="", help="save the setting x question recall matrix here (.npz)")
    parser.add_argument("--grid", default=DEFAULT_GRID, help="settings tried: 'name=v1,v2;name2=v3'")
    parser.add_argument(
        "--reranker", default="",
        help="a reranker URL (lexical://, http(s)://host/rerank?model=NAME; key: MEMOS_DERIVATION__RERANKER_API_KEY)"
        f": every search reranked, and {RERANK_GRID} added to the grid unless it names rerank_weight",
    )  # fmt: skip
    parser.add_argument(
        "--no-cache", dest="cache", action="store_false", help="do not cache embeddings under /tmp"
    )
    parser.add_argument(
        "--chart", default="docs/bench/retrieval.png",
        help="PNG of recall per category against the targets (leave-one-out runs only; '' for none)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.mode == "fine-only":  # before the runtime reads its settings
        os.environ["MEMOS_DERIVATION__KEEP_WINDOWS"] = "false"
    if args.reranker:  # on the MemOS API's searches, which are fast-mode ones
        os.environ["MEMOS_DERIVATION__RERANKER_URL"] = args.reranker
        os.environ["MEMOS_DERIVATION__RERANKER_IN_FAST_MODE"] = "true"
        if "rerank_weight" not in _parse_grid(args.grid):
            args.grid = f"{args.grid};{RERANK_GRID}"
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        os.environ["MEMOS_HOME"] = args.home or tmp
        reset_default_client()
        try:
            client = default_client()
            if args.cache:
                EmbeddingCache(client.runtime.embedder).install()
            figures = evaluate(args)
        finally:
            reset_default_client()
    if args.reranker:
        figures["reranker"] = args.reranker
    if args.chart and "loo_recall" in figures:
        retrieval_chart(figures, list(CATEGORIES.values()), Path(args.chart))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
