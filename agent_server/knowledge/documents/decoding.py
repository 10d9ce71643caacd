"""Bytes to text, strictly: a file that is not in its declared encoding is refused.

Policy (the WHATWG order): a byte order mark (UTF-8, UTF-16) wins, then the charset the
caller names (the upload's ``Content-Type``), then the HTML ``<meta charset>``, then UTF-8.
Undecodable bytes raise ``corrupt`` with the offset rather than being replaced: a lenient
decode would embed mojibake that then ranks in search results, and the fix (save the file as
UTF-8) is the user's to make.
Text containing NUL characters is binary data under a text name and is refused the same way.
"""

from __future__ import annotations

import codecs
import re

from agent_server.knowledge.documents.errors import DocumentError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85]")


def decode(data: bytes, *, charset: str | None = None, html: bool = False) -> str:
    """Decode ``data`` by the policy above; newlines become ``\\n``."""
    body = data
    encoding = charset
    for bom, name in _BOMS:
        if data.startswith(bom):
            body = data[len(bom) :]
            encoding = name
            break
    if encoding is None and html:
        match = _META_CHARSET.search(data[:2048])
        encoding = match.group(1).decode("ascii") if match else None
    encoding = encoding or "utf-8"
    try:
        text = body.decode(encoding)
    except LookupError:
        raise DocumentError("corrupt", f"unknown character set {encoding!r}") from None
    except UnicodeDecodeError as error:
        raise DocumentError(
            "corrupt",
            f"the text is not valid {encoding} at byte {error.start}; save the file as UTF-8",
        ) from None
    if "\x00" in text:
        raise DocumentError("corrupt", "the file contains binary data (NUL bytes), not text")
    return _NEWLINES.sub("\n", text)


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a ``Content-Type`` header, if any."""
    if not content_type:
        return None
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None
