"""Document parsing on real files made in the test: md, txt, html, json, pdf (reportlab), docx (python-docx)."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from processors.documents import detect_kind, parse_document
from schemas.errors import FetchFailed
from tests.support.examples import REPORT_MD


def make_pdf(pages: list[list[str]]) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for lines in pages:
        y = 800
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 18
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Fault report", level=1)
    document.add_paragraph("The drive could not start.")
    document.add_heading("Checks", level=2)
    document.add_paragraph("PLC outputs normal", style="List Bullet")
    document.add_paragraph("Valves normal", style="List Bullet")
    document.add_paragraph("Replace terminal blocks", style="List Number")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Part", "State"
    table.cell(1, 0).text, table.cell(1, 1).text = "Terminal", "Loose"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_markdown_keeps_headings_and_lists() -> None:
    doc = parse_document(REPORT_MD.encode(), name="report.md", mime="text/markdown")
    assert doc.kind == "markdown"
    assert "## Root cause" in doc.text and "- The drive could not start" in doc.text
    assert "1. PLC output signals: normal." in doc.text


def test_text_with_charset_and_bom() -> None:
    doc = parse_document(
        "\ufeffcafé au lait".encode("utf-8"), name="notes.txt", mime="text/plain; charset=utf-8"
    )
    assert doc.text == "café au lait" and doc.kind == "text"
    latin = parse_document("café".encode("latin-1"), name="x.txt", mime="text/plain; charset=latin-1")
    assert latin.text == "café"


def test_html_to_structured_text() -> None:
    html = (
        b"<html><head><title>t</title><style>p{}</style></head><body><h1>Report</h1><p>Intro <b>bold</b> text.</p>"
        b"<ul><li>first</li><li>second</li></ul><ol><li>step</li></ol><script>alert(1)</script>"
        b"<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table></body></html>"
    )
    doc = parse_document(html, name="page.html", mime="text/html")
    assert doc.kind == "html"
    assert "# Report" in doc.text and "Intro bold text." in doc.text
    assert "- first" in doc.text and "- second" in doc.text and "1. step" in doc.text
    assert "| a | b |" in doc.text and "| 1 | 2 |" in doc.text
    assert "alert" not in doc.text and "p{}" not in doc.text


def test_json_is_pretty_printed() -> None:
    doc = parse_document(b'{"a": [1, 2], "b": "x"}', name="data.json", mime="application/json")
    assert doc.kind == "json" and '"a": [' in doc.text


def test_pdf_made_with_reportlab() -> None:
    data = make_pdf([["PM1 workshop fault report", "Root cause: loose terminal block."], ["Page two text."]])
    doc = parse_document(data, name="report.pdf", mime="application/octet-stream")
    assert doc.kind == "pdf" and doc.pages == 2
    assert "Root cause: loose terminal block." in doc.text and "Page two text." in doc.text


def test_docx_made_with_python_docx() -> None:
    doc = parse_document(make_docx(), name="report.docx", mime=None)
    assert doc.kind == "docx"
    lines = doc.text.splitlines()
    assert "# Fault report" in lines and "## Checks" in lines
    assert "- PLC outputs normal" in lines and "1. Replace terminal blocks" in lines
    assert "| Part | State |" in lines and "| Terminal | Loose |" in lines


def test_magic_bytes_beat_a_wrong_name() -> None:
    assert detect_kind(make_pdf([["x"]]), name="report.md", mime="text/markdown") == "pdf"


def test_unsupported_and_corrupt_files_raise_fetch_failed() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.bin", b"\x00\x01")
    with pytest.raises(FetchFailed, match="unsupported document type 'application/zip' for file 'a.zip'"):
        parse_document(archive.getvalue(), name="a.zip", mime="application/zip")
    with pytest.raises(FetchFailed, match="unsupported document type"):
        parse_document(b"\x89PNG\r\n\x1a\n\x00\x00", name="pic.png", mime="image/png")
    with pytest.raises(FetchFailed, match="could not parse pdf file 'bad.pdf'"):
        parse_document(b"%PDF-1.4 garbage that is not a pdf", name="bad.pdf", mime="application/pdf")
    with pytest.raises(FetchFailed, match="could not parse docx file 'bad.docx'"):
        parse_document(b"not a zip at all", name="bad.docx", mime=None)


def test_budgets_refuse_inflation_and_cap_characters() -> None:
    import io as _io
    import zipfile
    import zlib

    from processors.documents import DocumentBudget, check_pdf_streams, check_zip
    from schemas.errors import OverBudget

    budget = DocumentBudget(
        max_unzipped_bytes=1024 * 1024, max_zip_entries=3, max_pdf_stream_bytes=1024 * 1024
    )
    out = _io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b" " * (2 * 1024 * 1024))
    with pytest.raises(
        OverBudget, match=r"'b\.docx' declares 2097152 bytes uncompressed, over the budget of 1048576"
    ):
        check_zip(out.getvalue(), budget, name="b.docx")
    many = _io.BytesIO()
    with zipfile.ZipFile(many, "w") as archive:
        for n in range(4):
            archive.writestr(f"f{n}", b"x")
    with pytest.raises(OverBudget, match=r"has 4 zip entries, over the budget of 3"):
        check_zip(many.getvalue(), budget, name="m.docx")
    check_zip(make_docx(), DocumentBudget(), name="ok.docx")  # a real document passes
    stream = zlib.compress(b"\0" * (2 * 1024 * 1024))
    pdf = b"%PDF-1.4\n1 0 obj\n<< /Filter /FlateDecode >>\nstream\n" + stream + b"\nendstream\nendobj\n"
    with pytest.raises(OverBudget, match=r"PDF streams that inflate to more than 1048576 bytes"):
        check_pdf_streams(pdf, budget, name="p.pdf")
    doc = parse_document(
        b"abc\x00\x01def " * 1000, name="t.txt", mime="text/plain", budget=DocumentBudget(max_chars=1000)
    )
    assert len(doc.text) == 1000 and "\x00" not in doc.text and doc.text.startswith("abcdef abcdef")
    assert doc.truncated_chars >= 1000  # at least what was read and left out


def test_empty_cells_of_a_sheet_count_against_the_character_budget() -> None:
    """A sheet of empty cells inflates to millions of them: reading them counts, so the parse stops early."""
    import openpyxl

    from processors.office import xlsx_text

    book = openpyxl.Workbook()
    sheet = book.active
    for row in range(1, 301):
        sheet.cell(row=row, column=8, value=None if row < 300 else "late value")
    sheet.cell(row=1, column=1, value="first")
    out = io.BytesIO()
    book.save(out)
    text, sheets = xlsx_text(out.getvalue(), max_chars=1000)  # 300 rows of 8 cells: over 1,000 read
    assert sheets == 1 and "first" in text and "late value" not in text
    whole, _ = xlsx_text(out.getvalue(), max_chars=100_000)
    assert "late value" in whole
