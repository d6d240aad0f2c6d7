"""Pure file parsing: bytes + name + mime type -> structured text (md, txt, html, json, pdf, docx, xlsx, pptx), within budgets.

:class:`DocumentBudget` bounds what one document may cost before and while it is parsed: the
decompressed size and entry count of zip-based formats (docx, xlsx, pptx: declared sizes checked, then
the entries actually inflated, up to the cap), the inflated size of PDF Flate streams, PDF pages, and
the characters kept. An input over a budget raises OverBudget, which the shell records as a memory that
says so. Memory and time limits need a process boundary: see ``streams.pipeline.sandbox``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Literal

from processors.office import markdown_table, pptx_text, xlsx_text
from schemas.errors import FetchFailed, OverBudget

__all__ = [
    "DocumentBudget",
    "DocumentKind",
    "ParsedDocument",
    "check_pdf_streams",
    "check_zip",
    "detect_kind",
    "parse_document",
]

logger = logging.getLogger(__name__)

DocumentKind = Literal["markdown", "text", "html", "json", "pdf", "docx", "xlsx", "pptx"]

_DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PPTX_MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
_BY_MIME: dict[str, DocumentKind] = {
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/csv": "text",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/json": "json",
    "application/pdf": "pdf",
    _DOCX_MIME: "docx",
    _XLSX_MIME: "xlsx",
    _PPTX_MIME: "pptx",
}
_BY_EXT: dict[str, DocumentKind] = {
    "md": "markdown",
    "markdown": "markdown",
    "txt": "text",
    "text": "text",
    "log": "text",
    "csv": "text",
    "html": "html",
    "htm": "html",
    "json": "json",
    "pdf": "pdf",
    "docx": "docx",
    "xlsx": "xlsx",
    "pptx": "pptx",
}
_GENERIC_MIME = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}


@dataclass(frozen=True, slots=True)
class DocumentBudget:
    """What one document may cost; sizes in bytes, ``max_chars`` in characters of extracted text."""

    max_unzipped_bytes: int = 64 * 1024 * 1024
    max_zip_entries: int = 4096
    max_pdf_stream_bytes: int = 64 * 1024 * 1024
    max_pdf_pages: int = 1000
    max_chars: int = 1_000_000


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """Text of a document with its structure kept as markdown (headings, lists, tables)."""

    text: str
    kind: DocumentKind
    name: str
    pages: int = 0
    truncated_chars: int = 0
    """At least this many characters (of what was read) were left out to stay within ``DocumentBudget.max_chars``."""


def detect_kind(data: bytes, *, name: str = "", mime: str | None = None) -> DocumentKind | None:
    """Kind of a document from its bytes' magic, its mime type and its file name; None when unsupported.

    Magic bytes win for pdf and the zip formats (docx, xlsx, pptx) (a server may send a pdf as octet-stream, or a file may be misnamed);
    then a specific mime type, then the file extension; other text that decodes as UTF-8 is read as text.
    """
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        head = data[:65536]
        for marker, kind in ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx")):
            if marker in head:
                return kind  # type: ignore[return-value]
    base = (mime or "").split(";", 1)[0].strip().lower()
    if base in _BY_MIME:
        return _BY_MIME[base]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in _BY_EXT:
        return _BY_EXT[ext]
    if (base in _GENERIC_MIME or base.startswith("text/")) and _looks_like_text(data):
        return "text"
    return None


def parse_document(
    data: bytes, *, name: str = "", mime: str | None = None, budget: DocumentBudget | None = None
) -> ParsedDocument:
    """Parse ``data`` into structured text, cut to ``budget.max_chars``.

    Raises OverBudget when a zip or PDF would inflate past its budget or a PDF has too many pages, and
    FetchFailed when the type is unsupported or the file unreadable.
    """
    budget = budget or DocumentBudget()
    kind = detect_kind(data, name=name, mime=mime)
    if kind is None:
        raise FetchFailed(f"unsupported document type {mime or 'unknown'!r} for file {name!r}")
    pages = 0
    try:
        if kind == "pdf":
            check_pdf_streams(data, budget, name=name)
            text, pages = _pdf(data, budget, name)
        elif kind == "docx":
            check_zip(data, budget, name=name, kind=kind)
            text = _docx(data)
        elif kind in ("xlsx", "pptx"):
            check_zip(data, budget, name=name, kind=kind)
            reader = xlsx_text if kind == "xlsx" else pptx_text
            text, pages = reader(data, max_chars=budget.max_chars * 2)
        else:
            raw = _decode(data[: budget.max_chars * 4], mime)
            text = _html(raw) if kind == "html" else _json(raw) if kind == "json" else raw
    except FetchFailed:
        raise
    except MemoryError as exc:
        raise OverBudget(f"parsing file {name!r} needs more memory than the parsing budget allows") from exc
    except Exception as exc:  # parsers raise many unrelated types on corrupt input; name them all here
        raise FetchFailed(f"could not parse {kind} file {name!r}: {type(exc).__name__}: {exc}") from exc
    raw_chars = len(text)
    tidied = _tidy(text[: budget.max_chars * 2])
    kept = tidied[: budget.max_chars]
    cut = raw_chars - len(kept) if len(tidied) > len(kept) or raw_chars > budget.max_chars * 2 else 0
    return ParsedDocument(kept, kind, name, pages, cut)


def check_zip(data: bytes, budget: DocumentBudget, *, name: str = "", kind: str = "zip") -> None:
    """Raise OverBudget when the zip's entries declare, or actually inflate to, more than the budget.

    Declared sizes are checked first (cheap); then every entry is inflated in 64 KB steps and counted,
    stopping at the cap, because a zip's declared sizes can lie.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise FetchFailed(f"could not parse {kind} file {name!r}: BadZipFile: {exc}") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > budget.max_zip_entries:
            raise OverBudget(
                f"file {name!r} has {len(entries)} zip entries, over the budget of {budget.max_zip_entries}"
            )
        declared = sum(e.file_size for e in entries)
        if declared > budget.max_unzipped_bytes:
            raise OverBudget(
                f"file {name!r} declares {declared} bytes uncompressed, over the budget of "
                f"{budget.max_unzipped_bytes} bytes"
            )
        total = 0
        for entry in entries:
            with archive.open(entry) as stream:
                while chunk := stream.read(65536):
                    total += len(chunk)
                    if total > budget.max_unzipped_bytes:
                        raise OverBudget(
                            f"file {name!r} inflates to more than {budget.max_unzipped_bytes} bytes "
                            "(a zip bomb?)"
                        )


_PDF_STREAM = re.compile(rb"stream\r?\n")


def check_pdf_streams(data: bytes, budget: DocumentBudget, *, name: str = "") -> None:
    """Raise OverBudget when the PDF's Flate streams inflate to more than ``max_pdf_stream_bytes`` in all.

    Every ``stream`` is tried as zlib data and inflated in bounded steps; streams with other filters or
    none are left to the parser (and to the sandbox's memory limit).
    """
    total = 0
    for match in _PDF_STREAM.finditer(data):
        if data[match.end() : match.end() + 1] != b"x":  # zlib streams start with 0x78
            continue
        inflater = zlib.decompressobj()
        position = match.end()
        while not inflater.eof and position < len(data):
            pending = data[position : position + 65536]
            position += len(pending)
            try:
                while pending and not inflater.eof:
                    out = inflater.decompress(pending, 1 << 20)
                    total += len(out)
                    if total > budget.max_pdf_stream_bytes:
                        raise OverBudget(
                            f"file {name!r} has PDF streams that inflate to more than "
                            f"{budget.max_pdf_stream_bytes} bytes"
                        )
                    pending = inflater.unconsumed_tail
            except zlib.error:
                break


def _looks_like_text(data: bytes) -> bool:
    sample = data[:4096]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 4  # a multi-byte character cut by the sample
    return True


def _decode(data: bytes, mime: str | None) -> str:
    charset = "utf-8"
    match = re.search(r"charset=([\w.-]+)", mime or "", re.IGNORECASE)
    if match:
        charset = match.group(1)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")


def _tidy(text: str) -> str:
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _json(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False, indent=2)
    except json.JSONDecodeError:
        return raw


def _pdf(data: bytes, budget: DocumentBudget, name: str) -> tuple[str, int]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    count = len(reader.pages)
    if count > budget.max_pdf_pages:
        raise OverBudget(f"file {name!r} has {count} pages, over the budget of {budget.max_pdf_pages}")
    pages: list[str] = []
    chars = 0
    for page in reader.pages:
        text = (page.extract_text() or "").strip()
        pages += [text] if text else []
        chars += len(text)
        if chars > budget.max_chars:
            break
    return "\n\n".join(pages), count


def _docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    out: list[str] = []
    body = document.element.body
    paragraphs = {id(p._element): p for p in document.paragraphs}
    tables = {id(t._element): t for t in document.tables}
    for child in body.iterchildren():
        if id(child) in paragraphs:
            line = _docx_paragraph(paragraphs[id(child)])
            if line:
                out.append(line)
        elif id(child) in tables:
            out.append(_docx_table(tables[id(child)]))
    return "\n\n".join(out)


def _docx_paragraph(paragraph: Any) -> str:
    text = str(paragraph.text).strip()
    if not text:
        return ""
    style = str(getattr(paragraph.style, "name", "") or "").lower()
    if style == "title":
        return f"# {text}"
    heading = re.match(r"heading (\d)", style)
    if heading:
        return f"{'#' * min(6, int(heading.group(1)))} {text}"
    if "list number" in style:
        return f"1. {text}"
    if "list" in style:
        return f"- {text}"
    return text


def _docx_table(table: Any) -> str:
    rows = [[cell.text.strip() for cell in row.cells] for row in table.rows]
    return markdown_table(rows)


_BLOCKS = {"p", "div", "section", "article", "header", "footer", "main", "blockquote", "pre", "br", "tr"}


def _html(raw: str) -> str:
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, Tag

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    out: list[str] = []

    def walk(node: Tag, depth: int) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                text = " ".join(str(child).split())
                if text:
                    out.append(text + " ")
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name.lower()
            if re.fullmatch(r"h[1-6]", name):
                out.append(f"\n\n{'#' * int(name[1])} {' '.join(child.get_text(' ').split())}\n\n")
            elif name == "li":
                marker = "1." if child.parent is not None and child.parent.name == "ol" else "-"
                out.append(f"\n{'  ' * depth}{marker} ")
                walk(child, depth + 1)
            elif name in ("ul", "ol"):
                walk(child, depth)
                out.append("\n")
            elif name == "table":
                rows = [
                    [" ".join(c.get_text(" ").split()) for c in tr.find_all(["td", "th"])]
                    for tr in child.find_all("tr")
                ]
                out.append("\n\n" + markdown_table(rows) + "\n\n")
            elif name in _BLOCKS:
                out.append("\n\n")
                walk(child, depth)
                out.append("\n\n")
            else:
                walk(child, depth)

    walk(soup, 0)
    text = "".join(out)
    return "\n".join(
        line.strip() if not line.lstrip().startswith("-") else line.rstrip() for line in text.split("\n")
    )
