"""Multipart parsing without a server: what HTTP clients send comes back part by part; bad bodies are refused."""

from __future__ import annotations

import asyncio
import random

import httpx2
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from app.errors import MalformedForm, TooManyFiles
from app.forms import Part, form_parts


def client_form(files: list[tuple[str, tuple[str, bytes]]], data: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The body and Content-Type an HTTP client (httpx2) sends for this form."""
    request = httpx2.Request("POST", "http://test/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_parts_come_back_as_sent() -> None:
    tricky = b"\r\n--not-the-boundary\r\n\r\n" * 3 + bytes(range(256))  # line breaks and dashes inside the data
    body, content_type = client_form(
        [("file", ("séven 7.png", tricky)), ("files", ("two.png", b"2"))], data={"note": "hello"}
    )
    assert form_parts(body, content_type, max_parts=10) == [
        Part("note", None, b"hello"),
        Part("file", "séven 7.png", tricky),
        Part("files", "two.png", b"2"),
    ]


def parsed_by_starlette(body: bytes, content_type: str) -> list[Part]:
    """The reference: the same body through Starlette's python-multipart parser."""

    async def parse() -> list[Part]:
        async def stream():  # type: ignore[no-untyped-def]
            yield body

        form = await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()
        parts = [
            Part(name, value.filename, await value.read())
            if isinstance(value, UploadFile)
            else Part(name, None, value.encode())
            for name, value in form.multi_items()
        ]
        await form.close()
        return parts

    return asyncio.run(parse())


@pytest.mark.parametrize("seed", range(20))
def test_random_forms_split_as_the_reference_parser_does(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [b"\r\n", b"--", b"\r\n--", b"-", b"\n", b"\r", b"\0", b"x", b"\xff", b"boundary"]
    files = [
        (rng.choice(["file", "files", "é"]), (f"{i}.png", b"".join(rng.choices(pieces, k=rng.randrange(0, 40)))))
        for i in range(rng.randrange(1, 5))
    ]
    body, content_type = client_form(files, data={"note": "text"} if seed % 2 else None)
    assert form_parts(body, content_type, max_parts=10) == parsed_by_starlette(body, content_type)


def test_an_empty_file_is_a_part_with_no_bytes() -> None:
    body, content_type = client_form([("file", ("empty.png", b""))])
    assert form_parts(body, content_type, max_parts=1) == [Part("file", "empty.png", b"")]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nx\r\n--b--\r\n", "multipart/form-data"),
        (b"not multipart at all", "multipart/form-data; boundary=b"),
        (b"--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        (b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nxx', "multipart/form-data; boundary=b"),
        (b'--b\r\nContent-Disposition: form-data; name="file"\r\nxx\r\n--b--', "multipart/form-data; boundary=b"),
    ],
    ids=["no boundary", "garbage", "part without a name", "cut short", "no blank line after the headers"],
)
def test_malformed_forms_are_refused(body: bytes, content_type: str) -> None:
    with pytest.raises(MalformedForm):
        form_parts(body, content_type, max_parts=10)


def test_parsing_stops_at_the_part_limit() -> None:
    body, content_type = client_form([("files", (f"{i}.png", b"x")) for i in range(5)])
    with pytest.raises(TooManyFiles, match="more parts than the 4 accepted"):
        form_parts(body, content_type, max_parts=4)
