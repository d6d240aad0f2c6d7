"""Pure parsing of spreadsheets (xlsx) and slide decks (pptx) into markdown text, stopping at a character cap.

Callers check the zip's decompressed size first (``processors.documents.check_zip``); these parsers then
read sheets row by row and slides shape by shape, and stop once ``max_chars`` characters are collected, so a
huge sheet is never held whole as text.
"""

from __future__ import annotations

import io
import logging
from typing import Any

__all__ = ["markdown_table", "pptx_text", "xlsx_text"]

logger = logging.getLogger(__name__)


def markdown_table(rows: list[list[str]]) -> str:
    """Rows as a markdown table (the first row is the header; short rows are padded)."""
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def xlsx_text(data: bytes, *, max_chars: int) -> tuple[str, int]:
    """(markdown: one ``## sheet`` heading and table per sheet, number of sheets). Values, not formulas."""
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        out: list[str] = []
        size = 0
        sheets = book.worksheets
        for sheet in sheets:
            rows: list[list[str]] = []
            for values in sheet.iter_rows(values_only=True):
                size += 1 + len(values)  # every row and cell read counts, empty ones too (a sheet of
                row = [_cell(v) for v in values]  # empty cells inflates to millions of them)
                while row and not row[-1]:
                    row.pop()
                if row:
                    rows.append(row)
                    size += sum(len(c) + 2 for c in row)
                if size > max_chars:
                    break
            if rows:
                out.append(f"## {sheet.title}\n\n{markdown_table(rows)}")
            if size > max_chars:
                break
        return "\n\n".join(out), len(sheets)
    finally:
        book.close()


def pptx_text(data: bytes, *, max_chars: int) -> tuple[str, int]:
    """(markdown: one ``## Slide n: title`` section per slide with its text, tables and notes, slide count)."""
    import pptx

    deck = pptx.Presentation(io.BytesIO(data))
    out: list[str] = []
    size = 0
    slides = list(deck.slides)
    for number, slide in enumerate(slides, start=1):
        title_shape = slide.shapes.title
        title = (
            title_shape.text_frame.text.strip()
            if title_shape is not None and title_shape.has_text_frame
            else ""
        )
        parts = [f"## Slide {number}" + (f": {title}" if title else "")]
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[_cell(c.text) for c in row.cells] for row in shape.table.rows]
                parts.append(markdown_table(rows))
            elif shape.has_text_frame:
                lines = [p.text.strip() for p in shape.text_frame.paragraphs if p.text.strip()]
                parts += [f"- {line}" for line in lines]
        if slide.has_notes_slide:
            notes = (
                slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
            )
            if notes:
                parts.append(f"Notes: {notes}")
        section = "\n\n".join(parts)
        out.append(section)
        size += len(section)
        if size > max_chars:
            break
    return "\n\n".join(out), len(slides)
