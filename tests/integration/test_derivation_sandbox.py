"""The parsing sandbox: documents parse in a limited child process; bombs and overruns come back as OverBudget."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import docx
import pytest

from processors.documents import DocumentBudget
from schemas.errors import FetchFailed, OverBudget
from streams.pipeline.sandbox import AddParseBudget, DocumentSandbox, SandboxLimits, UserParseTime

REPO = Path(__file__).resolve().parents[2]


def make_docx(text: str) -> bytes:
    document = docx.Document()
    document.add_heading("Shift notes", level=1)
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb(inflated: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * inflated)
    return out.getvalue()


def lying_zip(inflated: int) -> bytes:
    """A zip whose central directory declares a tiny size for an entry that inflates to ``inflated``."""
    data = zip_bomb(inflated)
    compressed = zipfile.ZipFile(io.BytesIO(data)).getinfo("word/document.xml")
    declared = inflated.to_bytes(4, "little")
    return data.replace(declared, (100).to_bytes(4, "little")) if compressed.file_size == inflated else data


def pdf_with_stream(inflated: int) -> bytes:
    payload = zlib.compress(b"\0" * inflated, 9)
    head = (
        b"%PDF-1.4\n1 0 obj\n<< /Length " + str(len(payload)).encode() + b" /Filter /FlateDecode >>\nstream\n"
    )
    return head + payload + b"\nendstream\nendobj\n%%EOF\n"


async def test_a_document_parses_in_the_sandbox() -> None:
    doc = await DocumentSandbox().parse(make_docx("Pressure restored."), name="notes.docx", mime=None)
    assert doc.kind == "docx" and doc.text == "# Shift notes\n\nPressure restored."


async def test_bombs_and_overruns_are_over_budget() -> None:
    budget = DocumentBudget(max_unzipped_bytes=8 * 1024 * 1024, max_pdf_stream_bytes=8 * 1024 * 1024)
    sandbox = DocumentSandbox(budget=budget)
    with pytest.raises(OverBudget, match=r"'bomb\.docx' declares \d+ bytes uncompressed, over the budget"):
        await sandbox.parse(zip_bomb(64 * 1024 * 1024), name="bomb.docx", mime=None)
    with pytest.raises(
        FetchFailed, match=r"'liar\.docx'"
    ):  # declares 100 bytes: read no further, then unreadable
        await sandbox.parse(lying_zip(64 * 1024 * 1024), name="liar.docx", mime=None)
    with pytest.raises(OverBudget, match=r"'bomb\.pdf' has PDF streams that inflate to more than 8388608"):
        await sandbox.parse(pdf_with_stream(64 * 1024 * 1024), name="bomb.pdf", mime="application/pdf")
    with pytest.raises(FetchFailed, match=r"could not parse json file 'deep\.json': RecursionError"):
        await sandbox.parse(b"[" * 100_000 + b"]" * 100_000, name="deep.json", mime="application/json")


async def test_memory_and_time_limits_stop_the_parser() -> None:
    many = b"[" + b"1," * 8_000_000 + b"1]"  # 8 million list items: far more than 200 MB once parsed
    small = DocumentSandbox(
        SandboxLimits(memory_bytes=200 * 1024 * 1024), DocumentBudget(max_chars=50_000_000)
    )
    with pytest.raises(OverBudget, match=r"'big\.json' (needs more memory|went over the budget of 200 MB)"):
        await small.parse(many, name="big.json", mime="application/json")
    hurried = DocumentSandbox(SandboxLimits(wall_s=0.01))
    with pytest.raises(OverBudget, match=r"'notes\.docx' took longer than 0\.01s, the time budget"):
        await hurried.parse(make_docx("slow enough"), name="notes.docx", mime=None)


async def test_characters_are_capped_and_nul_text_is_empty() -> None:
    sandbox = DocumentSandbox(budget=DocumentBudget(max_chars=1000))
    doc = await sandbox.parse(b"word " * 100_000, name="long.txt", mime="text/plain")
    assert len(doc.text) == 1000 and doc.truncated_chars > 0
    nul = await DocumentSandbox().parse(b"\0" * (2 * 1024 * 1024), name="nul.txt", mime="text/plain")
    assert nul.text == ""


def sheet_without_dimension(inflated: int) -> bytes:
    """An xlsx whose one sheet is ``inflated`` bytes of empty cells and has no ``<dimension>``: openpyxl reads
    the whole sheet to size it (seconds per 10 MB) before the first row."""
    row = b"<row><c/><c/><c/><c/><c/><c/><c/><c/></row>"
    ns = "http://schemas.openxmlformats.org/"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", f'<Types xmlns="{ns}package/2006/content-types">'
                      '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                      '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument'
                      '.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType='
                      '"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>')
        book.writestr("_rels/.rels", f'<Relationships xmlns="{ns}package/2006/relationships"><Relationship Id="rId1" '
                      f'Type="{ns}officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
                      "</Relationships>")
        book.writestr("xl/workbook.xml", f'<workbook xmlns="{ns}spreadsheetml/2006/main" xmlns:r="{ns}officeDocument/'
                      '2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>')
        book.writestr("xl/_rels/workbook.xml.rels", f'<Relationships xmlns="{ns}package/2006/relationships">'
                      f'<Relationship Id="rId1" Type="{ns}officeDocument/2006/relationships/worksheet" '
                      'Target="worksheets/sheet1.xml"/></Relationships>')
        book.writestr("xl/worksheets/sheet1.xml", f'<worksheet xmlns="{ns}spreadsheetml/2006/main"><sheetData>'.encode()
                      + row * (inflated // len(row)) + b"</sheetData></worksheet>")
    return out.getvalue()


async def test_the_files_of_one_add_share_one_parse_time_budget() -> None:
    """Each parse takes its time from the add's budget and gives back what it did not use; once it is spent,
    the add's other files are recorded over budget without a parser being started."""
    sandbox = DocumentSandbox(SandboxLimits(wall_s=45, per_add_s=2.0))
    shared = AddParseBudget(2.0)
    doc = await sandbox.parse(make_docx("Quick."), name="quick.docx", mime=None, shared=shared)
    assert doc.text and shared.left > 1.0  # a quick parse gives its unused time back
    slow = sheet_without_dimension(40 * 1024 * 1024)
    assert len(slow) < 200_000
    with pytest.raises(OverBudget, match=r"'slow\.xlsx' took longer than"):
        await sandbox.parse(slow, name="slow.xlsx", mime=None, shared=shared)
    assert shared.left < 1.0
    with pytest.raises(OverBudget, match=r"'next\.docx' was not parsed: .*derivation\.parse_budget_per_add_s"):
        await sandbox.parse(make_docx("Never read."), name="next.docx", mime=None, shared=shared)
    assert (await sandbox.parse(make_docx("Own budget."), name="other.docx", mime=None,
                                shared=AddParseBudget(2.0))).text  # another add has its own


async def test_a_users_parse_time_per_window_bounds_all_of_their_adds() -> None:
    """Each add reserves from its own budget and from its user's time in the window: once the user's is spent,
    their next add's files are not parsed (naming the setting) while another user's are, until the window ends."""
    now = [0.0]
    ledger = UserParseTime(10.0, 600.0, clock=lambda: now[0])
    first = AddParseBudget(60.0, (ledger, "alice"))
    assert first.reserve(45.0) == 10.0 and ledger.left("alice") == 0.0
    first.give_back(9.5)  # the parse took 0.5 s
    assert ledger.left("alice") == pytest.approx(9.5) and first.left == pytest.approx(59.5)
    assert first.reserve(45.0) == pytest.approx(9.5)  # a slow file takes the rest
    sandbox = DocumentSandbox(SandboxLimits(wall_s=45))
    with pytest.raises(OverBudget, match=r"'a\.docx' was not parsed: user 'alice' .*parse_budget_per_user_s"):
        await sandbox.parse(make_docx("Later."), name="a.docx", mime=None, shared=AddParseBudget(60.0, (ledger, "alice")))
    assert (await sandbox.parse(make_docx("Bob's."), name="b.docx", mime=None,
                                shared=AddParseBudget(60.0, (ledger, "bob")))).text  # bob has his own time
    now[0] = 600.0  # a new window
    assert ledger.left("alice") == 10.0
    unlimited = UserParseTime(0, 600.0)
    assert AddParseBudget(60.0, (unlimited, "alice")).reserve(45.0) == 45.0


def test_a_script_without_a_main_guard_is_not_run_again(tmp_path: Path) -> None:
    """The child is a fresh interpreter, not multiprocessing's spawn (which re-runs the caller's script)."""
    script = tmp_path / "user_script.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, io, sys
        sys.path.insert(0, {str(REPO)!r})
        import docx
        from streams.pipeline.sandbox import DocumentSandbox
        print("script ran", flush=True)
        document = docx.Document(); document.add_paragraph("hello"); out = io.BytesIO(); document.save(out)
        print(asyncio.run(DocumentSandbox().parse(out.getvalue(), name="a.docx", mime=None)).text, flush=True)
    """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["script ran", "hello"]
