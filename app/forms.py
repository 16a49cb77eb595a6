"""multipart/form-data bodies (RFC 7578), split in memory.

Starlette's request.form() streams each part through python-multipart's byte-by-byte state machine into a
SpooledTemporaryFile, which suits large uploads; a digit image is a few hundred bytes, and that machinery cost more
than classifying it. The body is already bounded by BodySizeLimit, so it is split whole with bytes.split, and only
the Content-Disposition header is parsed, by python-multipart.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

from app.errors import MalformedForm, TooManyFiles

CRLF = b"\r\n"


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None  # None for a text field
    data: bytes


def form_parts(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Every part of the form, in order; MalformedForm when the body is not valid multipart/form-data."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise MalformedForm("The multipart/form-data Content-Type has no boundary parameter.")
    # Each delimiter is CRLF "--" boundary; the first one may open the body without its CRLF.
    _preamble, *sections = (CRLF + body).split(CRLF + b"--" + boundary)
    if not sections or not sections[-1].startswith(b"--"):
        raise MalformedForm(
            "The multipart/form-data body is malformed or cut short; let your HTTP client build it (curl -F file=@x)."
        )
    if len(sections) - 1 > max_parts:
        raise TooManyFiles(f"The form has more parts than the {max_parts} accepted.")
    return [_part(section) for section in sections[:-1]]


def _part(section: bytes) -> Part:
    """One part: the rest of the delimiter line, its headers, a blank line, then its bytes."""
    head, blank, data = section.partition(CRLF + CRLF)
    if not blank:
        raise MalformedForm("A multipart part has no blank line after its headers; the body is malformed.")
    lines = head.split(CRLF)
    if lines[0].strip(b" \t"):  # only padding may follow the boundary on its line
        raise MalformedForm("A multipart boundary line carries extra characters; the body is malformed.")
    headers = dict(_header(line) for line in lines[1:])
    options = parse_options_header(headers.get(b"content-disposition", b""))[1]
    if b"name" not in options:
        raise MalformedForm('Every form part needs a Content-Disposition header with a "name".')
    filename = options.get(b"filename")
    return Part(_text(options[b"name"]), None if filename is None else _text(filename), data)


def _header(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    if not colon:
        raise MalformedForm("A multipart part has a header line without a colon; the body is malformed.")
    return name.strip().lower(), value.strip()


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")
