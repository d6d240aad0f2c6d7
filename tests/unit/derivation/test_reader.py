"""Reader: every message shape of the seed and every malformed input gives items, never an exception."""

from __future__ import annotations

import base64

from processors.reader import attach_fetched, decode_data_url, names_a_reference, read_messages
from schemas.errors import FetchFailed
from tests.support.examples import EXAMPLE_1, IMAGE_PATH, REPORT_PATH, example_2

BASE = "http://files.test:9090"


def test_plain_string_is_one_user_message() -> None:
    read = read_messages("I like tea.")
    assert [(i.kind, i.role, i.text) for i in read.items] == [("chat", "user", "I like tea.")]
    assert read.fetches == ()


def test_example_1_gives_four_chat_items_in_order() -> None:
    read = read_messages(EXAMPLE_1)
    assert [i.kind for i in read.items] == ["chat"] * 4
    assert [i.role for i in read.items] == ["user", "assistant", "user", "assistant"]
    assert [i.source.message_index for i in read.items] == [0, 1, 2, 3]


def test_example_2_parts_become_items_and_fetches() -> None:
    read = read_messages(example_2(BASE))
    kinds = [(i.kind, i.message_index) for i in read.items]
    assert kinds == [
        ("chat", 0),
        ("tool_schema", 0),
        ("chat", 1),
        ("file", 1),
        ("image", 1),
        ("tool_call", 2),
        ("tool_result", 3),
        ("chat", 4),
    ]
    system = read.items[0]
    assert "<tool_schema>" not in system.text and system.text.startswith("You are a professional")
    schema = read.items[1]
    assert schema.ok and schema.name == "file_reader" and schema.payload["returns"]["type"] == "text"
    user = read.items[2]
    assert user.text.endswith("[file: report.pdf]\n[image: 图片1.jpeg]")
    file_item = read.items[3]
    assert file_item.source.file_id == "file_123" and file_item.source.filename == "report.pdf"
    assert file_item.ref == BASE + REPORT_PATH  # the leading "@" is dropped
    call = read.items[5]
    assert call.name == "file_reader" and call.payload["arguments"] == {"file_id": "file_123"}
    assert call.source.tool_call_id == "call_file_reader_001"
    result = read.items[6]
    assert result.name == "file_reader" and result.source.tool_call_id == "call_file_reader_001"
    fetches = [(f.item_index, f.purpose, f.ref_kind, f.ref) for f in read.fetches]
    assert fetches == [(3, "file", "url", BASE + REPORT_PATH), (4, "image", "url", BASE + IMAGE_PATH)]


def test_chat_time_message_id_and_name_are_kept() -> None:
    read = read_messages(
        [
            {
                "role": "user",
                "name": "Caroline",
                "content": "Hi",
                "chat_time": "1:56 pm on 8 May, 2023",
                "message_id": 7,
            }
        ]
    )
    item = read.items[0]
    assert item.name == "Caroline"
    assert item.source.chat_time == "1:56 pm on 8 May, 2023" and item.source.message_id == "7"


def test_data_url_file_is_decoded_inline() -> None:
    payload = base64.b64encode(b"# Title\n\nBody text").decode()
    read = read_messages(
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {"filename": "a.md", "file_data": f"data:text/markdown;base64,{payload}"},
                    }
                ],
            }
        ]
    )
    file_item = next(i for i in read.items if i.kind == "file")
    assert file_item.data == b"# Title\n\nBody text" and file_item.mime == "text/markdown"
    assert read.fetches == ()


def test_bare_base64_file_data_is_decoded_and_a_path_is_fetched() -> None:
    payload = base64.b64encode(b"plain text file contents").decode()
    read = read_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"filename": "a.txt", "file_data": payload}},
                    {"type": "file", "file": {"filename": "b.txt", "file_data": "/tmp/some/b.txt"}},
                    {"type": "file", "file": {"file_data": "file:///tmp/c%20d.txt"}},
                ],
            }
        ]
    )
    files = [i for i in read.items if i.kind == "file"]
    assert files[0].data == b"plain text file contents"
    assert [(f.ref_kind, f.ref, f.filename) for f in read.fetches] == [
        ("path", "/tmp/some/b.txt", "b.txt"),
        ("path", "/tmp/c d.txt", "c d.txt"),
    ]


def test_only_explicit_paths_become_path_fetches_other_text_is_content() -> None:
    refs = ["/etc/passwd", "@/proc/self/environ", "../../etc/shadow", "./notes.md", "~/x.txt", "C:\\x.txt"]
    texts = ["etc/passwd", "notes about my day", "report.md", "/* theme */\nbody { color: red }", "// main.js",
             "/home/ann/notes.txt\nwas where I kept them"]  # code opening with a comment, and text on lines
    parts = [{"type": "file", "file": {"file_data": r}} for r in [*refs, *texts]]
    read = read_messages([{"role": "user", "content": parts}])
    assert [f.ref for f in read.fetches] == [r.lstrip("@") for r in refs]
    assert all(f.ref_kind == "path" for f in read.fetches)
    inline = [i for i in read.items if i.kind == "file" and i.data is not None]
    assert [(i.data, i.mime) for i in inline] == [(t.encode(), "text/plain") for t in texts]
    image = read_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "pic"}}]}])
    [picture] = [i for i in image.items if i.kind == "image"]
    assert image.fetches == () and not picture.ok and "not a URL" in (picture.source.error or "")


def test_bad_parts_and_messages_are_recorded_not_dropped() -> None:
    read = read_messages(
        [
            {
                "role": "user",
                "content": [{"type": "video_url", "video_url": {"url": "x"}}, {"type": "text", "text": "ok"}],
            },
            {"role": "assistant", "content": ""},
            "not a message",
            {"role": "robot", "content": "beep"},
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
            },
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "file_9"}}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http:///no-host.png"}}]},
            {
                "role": "user",
                "content": [{"type": "file", "file": {"filename": "x", "file_data": "ftp://h/x"}}],
            },
            {
                "role": "user",
                "content": [{"type": "file", "file": {"filename": "y", "file_data": "data:oops"}}],
            },
        ]
    )
    problems = [(i.message_index, i.kind, i.source.status, i.source.error) for i in read.items if not i.ok]
    assert problems == [
        (0, "skipped", "skipped", "unsupported content part type 'video_url' in message 0"),
        (1, "skipped", "skipped", "message 1 (assistant) is empty"),
        (2, "skipped", "skipped", "message 2 is not an object: str"),
        (3, "skipped", "skipped", "message 3 has unknown role 'robot'"),
        (4, "audio", "skipped", "audio is kept as a reference only; no transcription model is configured"),
        (
            5,
            "file",
            "unfetched",
            "file 'file_9' has no file_data (an uploaded file id alone cannot be resolved)",
        ),
        (6, "image", "unfetched", "malformed URL 'http:///no-host.png'"),
        (
            7,
            "file",
            "unfetched",
            "unsupported URL scheme in 'ftp://h/x' (use http, https, data or a local path)",
        ),
        (8, "file", "unfetched", "malformed data URL 'data:oops'"),
    ]
    assert read.items[0].text == "ok" and read.fetches == ()


def test_invalid_tool_schema_json_is_an_unparsed_item() -> None:
    read = read_messages(
        [{"role": "system", "content": "Be brief. <tool_schema>[{'name': broken</tool_schema>"}]
    )
    schema = next(i for i in read.items if i.kind == "tool_schema")
    assert schema.source.status == "unparsed"
    assert schema.source.error is not None and schema.source.error.startswith("invalid JSON in <tool_schema>")
    assert read.items[0].kind == "chat" and read.items[0].text == "Be brief."


def test_tool_schema_object_forms() -> None:
    read = read_messages(
        [
            {
                "role": "system",
                "content": '<tool_schema>{"tools": [{"type": "function", "function": {"name": "search", '
                '"description": "web search"}}, 3]}</tool_schema>',
            }
        ]
    )
    schemas = [i for i in read.items if i.kind == "tool_schema"]
    assert [(s.name, s.source.status) for s in schemas] == [("search", "ok"), ("", "unparsed")]
    assert schemas[0].payload["description"] == "web search"


def test_attach_fetched_fills_bytes_or_marks_unfetched() -> None:
    read = read_messages(example_2(BASE))
    items = attach_fetched(read, {3: (b"# report", "text/markdown"), 4: FetchFailed("HTTP 404 Not Found")})
    assert items[3].data == b"# report" and items[3].ok
    assert items[4].source.status == "unfetched" and items[4].source.error == "HTTP 404 Not Found"


def test_decode_data_url_plain_and_base64() -> None:
    assert decode_data_url("data:,hello%20world") == (b"hello world", "text/plain")
    assert decode_data_url("data:image/png;base64,AAEC") == (b"\x00\x01\x02", "image/png")


def test_names_a_reference_says_what_the_reader_fetches_or_refuses_as_a_link() -> None:
    jpeg = base64.b64encode(b"\xff\xd8\xff" + bytes(60)).decode()  # starts with "/9j/": base64, not a path
    refs = ["https://example.com/a.png", "ftp://host/a", "@/tmp/a.txt", "/etc/passwd", "~/notes.txt", "./a.md",
            "C:\\x.txt", "file:///etc/hosts", "data:text/plain,hi", jpeg, "/* a css file */ body {}", "plain words",
            "// app.js", "/tmp/a.txt\nsecond line"]
    for purpose in ("file", "image"):
        for ref in refs:
            part = ({"type": "file", "file": {"file_data": ref}} if purpose == "file"
                    else {"type": "image_url", "image_url": {"url": ref}})
            read = read_messages([{"role": "user", "content": [part]}])
            item = next(i for i in read.items if i.kind == purpose)
            as_link = bool(read.fetches) or "URL scheme" in item.text
            assert names_a_reference(ref, purpose) == as_link, (purpose, ref)
    assert names_a_reference("/etc/passwd", "file") and not names_a_reference(jpeg, "file")
    assert names_a_reference(jpeg, "image")  # an image part's bare text is no content: read as a path, refused
