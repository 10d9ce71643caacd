"""Reading documents into sections and chunking them: fixture files in fixtures/documents/,
PDFs written by pypdf here (plain, titled, outlined, encrypted)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from agent_server.knowledge.documents import (
    CONTEXT_LIMIT,
    Chunk,
    Document,
    DocumentError,
    chunk,
    document_id,
    media_type_of,
    read_document,
    split,
)

FIXTURES = Path(__file__).parent / "fixtures" / "documents"
KB = "handbook"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def read_fixture(name: str, **kwargs) -> Document:
    return read_document(name, fixture(name), KB, **kwargs)


def make_pdf(
    pages: list[list[str]],
    *,
    title: str | None = None,
    password: str | None = None,
    outline: list[tuple[str, int]] = (),
) -> bytes:
    """A PDF with one Helvetica text line per string; ``outline``: (title, 0-based page)."""
    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        operations = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            operations.append(f"({escaped}) Tj T*")
        operations.append("ET")
        content = DecodedStreamObject()
        content.set_data("\n".join(operations).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(content)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    for heading, page_index in outline:
        writer.add_outline_item(title=heading, page_number=page_index)
    if title is not None:
        writer.add_metadata({"/Title": title})
    if password is not None:
        writer.encrypt(password, algorithm="RC4-128")  # AES needs the cryptography package
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


THREE_PAGES = [
    ["Page one talks about installation.", "It has two lines."],
    ["Page two covers configuration."],
    ["Page three explains retrieval.", "Chunks carry their page."],
]


def section_text(document: Document, item: Chunk) -> str:
    return document.sections[item.section].text


# Markdown ------------------------------------------------------------------------------------


def test_markdown_heading_paths_follow_atx_and_setext_nesting():
    document = read_fixture("guide.md")
    assert document.title == "Citadel Guide"
    assert document.media_type == "text/markdown"
    assert [section.headings for section in document.sections] == [
        ("Citadel Guide",),
        ("Citadel Guide", "Install"),
        ("Citadel Guide", "Install", "From source"),
        ("Citadel Guide", "Install", "From a wheel"),
        ("Citadel Guide", "Configuration"),  # setext level 2
        ("Usage Guide",),  # setext level 1 closes everything
    ]
    assert document.sections[1].text == "Install it with pip."
    assert all(section.page is None for section in document.sections)


def test_hash_lines_inside_code_fences_stay_code():
    source = fixture("guide.md").decode()
    document = read_document("guide.md", fixture("guide.md"), KB)
    backticks = re.search(r"```bash\n.*?\n```", source, re.S).group(0)
    tildes = re.search(r"~~~python\n.*?\n~~~", source, re.S).group(0)
    assert backticks in document.sections[2].text
    assert tildes in document.sections[4].text
    headings = {heading for section in document.sections for heading in section.headings}
    assert not headings & {"this is a comment, not a heading", "neither is this", "Title"}
    # a fence that fits in a chunk is never cut, even at its blank line
    chunks = chunk(document, size=160, overlap=20)
    assert any(backticks in item.text for item in chunks)


def test_markdown_details():
    text = (
        "---\ntitle: 'Front Matter Title'\ntags: [a]\n---\n"
        "#hashtag is text\n\n####### seven is text\n\n"
        "## Closed ##\n\nBody one.\n\n"
        "## [Linked `code`](https://x.org) heading\n\nBody two.\n\n"
        "- a list item\n---\n\n"
        "***\n\nAfter the rule.\n\n"
        "```\nunclosed fence\n# still code\n"
    )
    document = read_document("notes.md", text.encode(), KB)
    assert document.title == "Front Matter Title"
    assert [(section.headings, section.text) for section in document.sections] == [
        ((), "#hashtag is text\n\n####### seven is text"),
        (("Closed",), "Body one."),
        (
            ("Linked code heading",),
            "Body two.\n\n- a list item\n---\n\nAfter the rule.\n\n"
            "```\nunclosed fence\n# still code",
        ),
    ]


def test_a_markdown_file_without_headings_is_titled_by_its_stem():
    document = read_document("docs/setup-notes.markdown", b"Just a paragraph.\n", KB)
    assert document.title == "setup-notes"
    assert document.sections[0].headings == ()


# HTML ----------------------------------------------------------------------------------------


def test_html_keeps_content_and_structure_and_drops_page_furniture():
    document = read_fixture("page.html")
    assert document.title == "Citadel & Friends"
    assert document.media_type == "text/html"
    assert [(section.headings, section.text) for section in document.sections] == [
        (("Welcome",), "Citadel serves agents over HTTP.\n\nIt keeps history on the server."),
        (("Welcome", "Features"), "- Streaming answers\n- Tool calls"),
        (
            ("Welcome", "Features", "Retrieval"),
            "Documents are chunked & embedded.\n\nline one\n    indented line two\n\n"
            "name | value\nsize | 800",
        ),
        (("Welcome", "Limits"), "Files above the limit are refused.\nEncrypted PDFs too."),
    ]
    everything = document.text
    for furniture in ("color: red", "Not a heading", "tracking", "Docs menu", "Copyright"):
        assert furniture not in everything


def test_html_without_title_uses_the_first_h1_and_survives_a_missing_head_end():
    page = b"<html><head><meta charset=utf-8><body><h1>Only Heading</h1><p>Text.</p><p hidden>x"
    document = read_document("page.htm", page, KB)
    assert document.title == "Only Heading"
    assert document.text == "Text."


def test_html_charset_comes_from_meta_or_content_type():
    body = "<p>caf\u00e9 \u2013 na\u00efve</p>"
    meta = f'<meta charset="windows-1252">{body}'.encode("cp1252")
    assert read_document("a.html", meta, KB).text == "caf\u00e9 \u2013 na\u00efve"
    latin = body.replace("\u2013", "-").encode("latin-1")
    declared = read_document("a.html", latin, KB, "text/html; charset=ISO-8859-1")
    assert declared.text == "caf\u00e9 - na\u00efve"


# Plain text and decoding ---------------------------------------------------------------------


def test_text_files_decode_utf8_with_bom_and_normalise_newlines():
    data = "\ufeffFirst line\r\nSecond line\rThird\r\n".encode()
    document = read_document("notes/todo.txt", data, KB)
    assert document.text == "First line\nSecond line\nThird"
    assert document.title == "todo"
    assert document.sections[0].headings == ()
    utf16 = read_document("u.txt", "h\u00e9llo".encode("utf-16"), KB)
    assert utf16.text == "h\u00e9llo"


@pytest.mark.parametrize(
    ("data", "content_type", "detail"),
    [
        (b"caf\xe9 latin-1", None, "not valid utf-8 at byte 3"),
        (b"text\x00with NUL", None, "binary data"),
        (b"hello", "text/plain; charset=klingon", "unknown character set"),
    ],
)
def test_text_that_is_not_in_its_encoding_is_corrupt(data, content_type, detail):
    with pytest.raises(DocumentError) as caught:
        read_document("bad.txt", data, KB, content_type)
    assert caught.value.code == "corrupt"
    assert detail in caught.value.message


# PDF -----------------------------------------------------------------------------------------


def test_pdf_text_is_read_per_page():
    document = read_document("report.pdf", make_pdf(THREE_PAGES, title="Annual Report"), KB)
    assert document.title == "Annual Report"
    assert document.media_type == "application/pdf"
    assert [(section.page, section.text) for section in document.sections] == [
        (1, "Page one talks about installation.\nIt has two lines."),
        (2, "Page two covers configuration."),
        (3, "Page three explains retrieval.\nChunks carry their page."),
    ]
    assert [item.page for item in chunk(document, size=40, overlap=10)] == [1, 1, 2, 3, 3]


def test_pdf_headings_come_from_the_outline_and_the_title_from_the_stem():
    data = make_pdf([*THREE_PAGES, []], outline=[("Setup", 0), ("Retrieval", 2)])
    document = read_document("files/Manual.pdf", data, KB)
    assert document.title == "Manual"
    assert [(section.page, section.headings) for section in document.sections] == [
        (1, ("Setup",)),
        (2, ("Setup",)),
        (3, ("Retrieval",)),
    ]  # the empty fourth page has no section


def test_a_pdf_locked_only_against_editing_is_read():
    document = read_document("locked.pdf", make_pdf(THREE_PAGES[:1], password=""), KB)
    assert document.sections[0].text.startswith("Page one")


# Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("empty.txt", fixture("empty.txt"), "empty"),
        ("blank.md", fixture("blank.md"), "empty"),
        ("headings-only.md", b"# Title\n\n## Section\n", "empty"),
        ("scan.pdf", make_pdf([[], []]), "empty"),
        ("scripts.html", b"<script>alert(1)</script><nav>menu</nav>", "empty"),
        ("junk.pdf", fixture("junk.pdf"), "corrupt"),
        ("truncated.pdf", make_pdf(THREE_PAGES)[:300], "corrupt"),
        ("report.docx", fixture("report.docx"), "unsupported_type"),
        ("secret.pdf", make_pdf(THREE_PAGES, password="hunter2"), "encrypted"),
    ],
)
def test_each_unreadable_file_fails_with_its_code(name, data, code):
    with pytest.raises(DocumentError) as caught:
        read_document(name, data, KB)
    assert caught.value.code == code
    assert caught.value.message and str(caught.value).startswith(f"{code}: ")


def test_files_above_the_limit_are_too_large_before_being_parsed():
    data = b"x" * 1001
    with pytest.raises(DocumentError) as caught:
        read_document("big.pdf", data, KB, max_bytes=1000)  # not a PDF: never opened
    assert caught.value.code == "too_large"
    assert "1001 bytes" in caught.value.message
    assert read_document("ok.txt", data[:1000], KB, max_bytes=1000).size_bytes == 1000


def test_the_reader_is_chosen_by_extension_then_content_type():
    assert media_type_of("README.md", "text/plain") == "text/markdown"
    assert media_type_of("notes.MD", "application/octet-stream") == "text/markdown"
    assert media_type_of("blob", "application/pdf") == "application/pdf"
    assert media_type_of("README", "text/markdown; charset=utf-8") == "text/markdown"
    assert media_type_of("index", "application/xhtml+xml") == "text/html"
    assert read_document("upload", make_pdf(THREE_PAGES), KB, "application/pdf").sections
    for name, content_type in [("slides.pptx", None), ("blob", "image/png"), ("x", None)]:
        with pytest.raises(DocumentError) as caught:
            media_type_of(name, content_type)
        assert caught.value.code == "unsupported_type"
        assert ".md" in caught.value.message  # says what would work


# Identity ------------------------------------------------------------------------------------


def test_document_ids_depend_on_knowledge_base_and_source_only():
    first = read_fixture("guide.md")
    again = read_document("guide.md", fixture("guide.md") + b"\nMore.\n", KB)
    assert first.id == again.id == document_id(KB, "guide.md")
    assert first.content_hash != again.content_hash
    assert document_id("other", "guide.md") != first.id
    assert document_id(KB, "docs/guide.md") != first.id
    nfd = unicodedata.normalize("NFD", "caf\u00e9.md")
    assert document_id(KB, nfd) == document_id(KB, "caf\u00e9.md")
    assert first.content_hash == hashlib.sha256(fixture("guide.md")).hexdigest()


def test_ids_are_stable_across_runs():
    """Golden values: a change here re-embeds every stored chunk of every knowledge base."""
    document = read_fixture("guide.md")
    assert document.id == "461ce91f-21ad-51b8-ab95-c99c11b70b64"
    chunks = chunk(document)
    assert (chunks[0].id, chunks[-1].id) == (
        "60a511f6-9da1-5c14-ac72-5a5dd26eaeec",
        "254190f9-1bfc-596b-b0dd-6ff74fe5c7f6",
    )


def test_rereading_the_same_bytes_gives_the_same_chunks():
    assert chunk(read_fixture("guide.md")) == chunk(read_fixture("guide.md"))
    data = make_pdf(THREE_PAGES)
    one = chunk(read_document("r.pdf", data, KB), size=40, overlap=10)
    assert one == chunk(read_document("r.pdf", data, KB), size=40, overlap=10)


def test_a_one_word_edit_changes_only_its_own_sections_chunk_ids():
    original = fixture("guide.md")
    edited = original.replace(b"Download the wheel.", b"Download the binary wheel.")
    before = chunk(read_document("guide.md", original, KB), size=120, overlap=30)
    after = chunk(read_document("guide.md", edited, KB), size=120, overlap=30)
    changed = {item.section for item in before} - {
        item.section for item in before if item.id in {other.id for other in after}
    }
    assert changed == {3}  # "From a wheel"
    assert len({item.id for item in after} - {item.id for item in before}) == 1


def test_chunk_ids_are_unique_even_for_repeated_text_and_headings():
    text = "## Step\n\nDo it.\n\n## Step\n\nDo it.\n\n## Step\n\nDo it.\n"
    chunks = chunk(read_document("steps.md", text.encode(), KB))
    assert len(chunks) == 3 and len({item.id for item in chunks}) == 3


# Chunking ------------------------------------------------------------------------------------


def long_markdown() -> str:
    sentence = "Citadel chunks every section of a document on its own boundaries. "
    paragraphs = "\n\n".join(sentence * (3 + i % 5) for i in range(12))
    return (
        f"# Manual\n\n{paragraphs}\n\n## Details\n\n{paragraphs}\n\n"
        f"## Tiny\n\nShort.\n\n### Deeper\n\n{sentence * 40}\n"
    )


@pytest.mark.parametrize(("size", "overlap"), [(800, 100), (300, 60), (120, 0), (50, 49)])
def test_chunks_stay_in_their_section_and_within_size(size, overlap):
    document = read_document("manual.md", long_markdown().encode(), KB)
    chunks = chunk(document, size=size, overlap=overlap)
    for index, item in enumerate(chunks):
        assert item.index == index
        assert 0 < len(item.text) <= size
        assert item.text == section_text(document, item)[item.start : item.end]
        section = document.sections[item.section]
        assert (item.headings, item.page) == (section.headings, section.page)
        assert item.metadata["chunk_index"] == index
        assert json.loads(json.dumps(item.metadata)) == item.metadata
    for section_number, section in enumerate(document.sections):
        mine = [item for item in chunks if item.section == section_number]
        assert mine[0].start == 0  # nothing carried over from the section before
        assert mine[-1].end == len(section.text)
        for previous, current in itertools.pairwise(mine):
            assert previous.end - overlap <= current.start
            assert not section.text[previous.end : current.start].strip()  # no gap
            assert current.end > previous.end
            if overlap >= 20:
                assert current.start < previous.end  # overlap present within a section


def test_long_sections_split_on_paragraphs_then_sentences():
    document = read_document("manual.md", long_markdown().encode(), KB)
    chunks = chunk(document, size=400, overlap=80)
    for item in chunks:
        if item.end < len(section_text(document, item)):
            assert item.text.endswith(".")  # never mid-sentence
            assert len(item.text) >= 190  # a break in the first half is not taken
    after = [section_text(document, item)[item.end : item.end + 2] for item in chunks]
    assert after.count("\n\n") >= 6  # paragraph ends are preferred


def test_words_and_unbroken_runs_are_the_last_resort():
    assert split("alpha beta gamma delta", size=11, overlap=0) == [(0, 10), (11, 22)]
    assert split("x" * 25, size=10, overlap=3) == [(0, 10), (10, 20), (20, 25)]


def test_an_oversized_code_fence_splits_between_lines():
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}." for i in range(30))
    text = f"Intro.\n\n```python\n{code}\n```\n\nOutro."
    document = read_document("code.md", text.encode(), KB)
    chunks = chunk(document, size=300, overlap=60)
    body = [item for item in chunks if "value_" in item.text]
    assert len(body) > 1
    for item in body:
        lines = item.text.split("\n")
        assert all(
            re.fullmatch(r"(    value_\d+ = compute\(\d+\)  # step \d+\.|```(python)?)", line)
            for line in lines
            if "Intro" not in line and "Outro" not in line and line
        )


def test_embed_text_prefixes_title_and_heading_path():
    document = read_fixture("guide.md")
    chunks = chunk(document)
    source = next(item for item in chunks if item.headings[-1:] == ("From source",))
    assert source.embed_text == f"Citadel Guide > Install > From source\n\n{source.text}"
    usage = next(item for item in chunks if item.headings == ("Usage Guide",))
    assert usage.embed_text.startswith("Citadel Guide > Usage Guide\n\n")
    long_heading = "Heading " * 40
    text = f"# T\n\n## {long_heading}\n\nBody.\n"
    [item] = chunk(read_document("long.md", text.encode(), KB))
    context = item.embed_text.split("\n\n")[0]
    assert len(context) == CONTEXT_LIMIT and context.startswith("\u2026")


def test_size_must_exceed_overlap():
    document = read_fixture("guide.md")
    for size, overlap in [(100, 100), (100, -1), (0, 0), (10, 20)]:
        with pytest.raises(ValueError, match="size > overlap"):
            chunk(document, size=size, overlap=overlap)


_PIECES = st.sampled_from([*"ab .!?\n\t\u00e9", "```", "~~~", "word", "Sentence. ", "\n\n"])


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(_PIECES, max_size=300).map("".join),
    size=st.integers(1, 120),
    overlap_fraction=st.floats(0, 0.99),
)
def test_split_covers_all_text_within_bounds(text, size, overlap_fraction):
    overlap = int(size * overlap_fraction)
    spans = split(text, size=size, overlap=overlap)
    covered = [False] * len(text)
    for start, end in spans:
        assert 0 <= start < end <= len(text)
        assert end - start <= size
        assert not text[end - 1].isspace()
        for position in range(start, end):
            covered[position] = True
    assert all(covered[i] for i, char in enumerate(text) if not char.isspace())
    for (start, end), (next_start, next_end) in itertools.pairwise(spans):
        assert start < next_start and end < next_end
        assert next_start >= end - overlap
