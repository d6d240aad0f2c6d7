"""Spreadsheets (xlsx) and slide decks (pptx) are parsed in the parsing sandbox, through the real HTTP server:
their text becomes searchable memories, and a zip-bomb xlsx is refused with a memory that says so."""

from __future__ import annotations

import io

import pytest

from memos.server.app import BackgroundServer
from tests.security.conftest import Tenant, add, memories_of
from tests.security.test_isolation import data_url, file_message, zip_bomb_docx

pytestmark = pytest.mark.timeout(600)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


def make_xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Budget"
    sheet.append(["item", "cost"])
    sheet.append(["kayak rental", 42])
    sheet.append(["lighthouse tickets", 17])
    book.create_sheet("Crew").append(["captain", "Ingrid Halvorsen"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_pptx() -> bytes:
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    slide.shapes.title.text = "Harbour plan"
    slide.placeholders[1].text_frame.text = "Moor the ferry at pier nine"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    for r, row in enumerate((("tide", "height"), ("spring", "4.2 m"))):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    slide.notes_slide.notes_text_frame.text = "Remind the crew about the fog horn"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def test_xlsx_and_pptx_become_memories_and_an_xlsx_bomb_is_refused(
    server: BackgroundServer, alice: Tenant
) -> None:
    with alice.client(server) as client:
        add(client, "alice", [file_message("budget.xlsx", data_url(XLSX, make_xlsx()))])
        add(client, "alice", [file_message("harbour.pptx", data_url(PPTX, make_pptx()))])
        add(
            client,
            "alice",
            [file_message("bomb.xlsx", data_url(XLSX, zip_bomb_docx(member="xl/worksheets/sheet1.xml")))],
        )
        memories = memories_of(client, "alice")
    text = "\n".join(m["memory"] for m in memories)
    for expected in ("## Budget", "| kayak rental | 42 |", "## Crew", "Ingrid Halvorsen",
                     "Slide 1: Harbour plan", "Moor the ferry at pier nine", "| spring | 4.2 m |",
                     "Remind the crew about the fog horn"):  # fmt: skip
        assert expected in text, (expected, text[:2000])
    errors = " ".join(
        m["memory"] for m in memories if (m.get("metadata") or {}).get("type") == "source_error"
    )
    assert "bomb.xlsx" in errors and "over budget" in errors and "uncompressed" in errors, errors
