"""Decoder fuzzing: broken images of every supported format, through the preparation chain and every image endpoint.

Each valid seed image is cut short at every byte offset of its first 2 KB and at a sample of later ones, has random
bytes flipped, and has each length field of its container (PNG chunks, JPEG segments, RIFF chunks, BMP headers,
TIFF tags, GIF sub-blocks) set to 0, 1 and the largest value. Whatever the decoders make of it, the answer must be
the image itself or a 4xx with a code, never a 5xx, and the service must answer the next valid image correctly.
Inputs that once got a 5xx are kept in tests/data/decoder-regressions/ and replayed through every endpoint.

Fixed seed, bounded: about 25,000 inputs in ~30 s. `make fuzz` runs FUZZ_SCALE=20 (more offsets, flips and seeds,
every input through HTTP).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.errors import ServiceError
from app.handlers import http_status
from app.preprocess import preprocess
from tests.helpers import ROOT, encode, photo_of
from training.data import Mnist

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
HEAD_BYTES = 2048  # every truncation offset up to here
LATER_OFFSETS = 64 * SCALE
FLIP_MUTANTS = 96 * SCALE
HTTP_EVERY = max(1, 8 // SCALE)  # every n-th input also goes through HTTP, round-robin over the endpoints
BIG_LENGTHS = {1: 0xFF, 2: 0xFFFF, 4: 2**31 - 1}
REGRESSIONS = ROOT / "tests" / "data" / "decoder-regressions"
MULTIPART_FILE = "file"


def _seed_image(digit: np.ndarray) -> Image.Image:
    return photo_of(digit, size=96, scale=3, offset=(8, 10))


def _palette_with_transparency(photo: Image.Image) -> bytes:
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(palette, "PNG", transparency=palette.getpixel((0, 0)))  # the paper


def _exif_rotated_jpeg(photo: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(photo.rotate(90, expand=True), "JPEG", exif=exif)


SEEDS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": lambda photo: encode(photo, "PNG"),
    "jpeg": lambda photo: encode(photo, "JPEG", quality=90),
    "progressive-jpeg": lambda photo: encode(photo, "JPEG", progressive=True),
    "bmp": lambda photo: encode(photo, "BMP"),
    "gif": lambda photo: encode(photo.convert("P"), "GIF"),
    "webp": lambda photo: encode(photo, "WEBP"),
    "tiff": lambda photo: encode(photo, "TIFF", compression="tiff_deflate"),
    "png-16-bit": lambda photo: encode(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG"),
    "palette-png-trns": _palette_with_transparency,
    "exif-rotated-jpeg": _exif_rotated_jpeg,
}


# Where each container keeps its length fields: (offset, width in bytes, byte order).
Field = tuple[int, int, str]


def png_fields(data: bytes) -> Iterator[Field]:
    position = 8
    while position + 8 <= len(data):
        yield position, 4, ">"
        position += 12 + struct.unpack_from(">I", data, position)[0]


def jpeg_fields(data: bytes) -> Iterator[Field]:
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            yield position + 2, 2, ">"
            return
        yield position + 2, 2, ">"
        position += 2 + struct.unpack_from(">H", data, position + 2)[0]


def riff_fields(data: bytes) -> Iterator[Field]:
    yield 4, 4, "<"
    position = 12
    while position + 8 <= len(data):
        yield position + 4, 4, "<"
        size = struct.unpack_from("<I", data, position + 4)[0]
        position += 8 + size + size % 2


def bmp_fields(data: bytes) -> Iterator[Field]:
    yield from ((2, 4, "<"), (10, 4, "<"), (14, 4, "<"), (18, 4, "<"), (22, 4, "<"), (34, 4, "<"), (46, 4, "<"))


def tiff_fields(data: bytes) -> Iterator[Field]:
    order = "<" if data[:2] == b"II" else ">"
    yield 4, 4, order  # offset of the first IFD
    ifd = struct.unpack_from(f"{order}I", data, 4)[0]
    if ifd + 2 > len(data):
        return
    entries = struct.unpack_from(f"{order}H", data, ifd)[0]
    yield ifd, 2, order
    for entry in range(min(entries, 64)):
        start = ifd + 2 + 12 * entry
        yield start + 4, 4, order  # value count
        yield start + 8, 4, order  # value or offset


def gif_fields(data: bytes) -> Iterator[Field]:
    yield from ((6, 2, "<"), (8, 2, "<"))  # logical screen size
    position = data.find(b"\x2c")  # image descriptor
    if position > 0:
        yield from ((position + 5, 2, "<"), (position + 7, 2, "<"))
        block = position + 11  # after the LZW minimum code size: the first data sub-block's length byte
        while block < len(data) and data[block]:
            yield block, 1, "<"
            block += data[block] + 1


CONTAINERS: dict[bytes, Callable[[bytes], Iterator[Field]]] = {
    b"\x89PNG": png_fields,
    b"\xff\xd8": jpeg_fields,
    b"RIFF": riff_fields,
    b"BM": bmp_fields,
    b"II": tiff_fields,
    b"MM": tiff_fields,
    b"GIF8": gif_fields,
}


def length_field_mutants(data: bytes) -> Iterator[bytes]:
    fields = next(fields for magic, fields in CONTAINERS.items() if data.startswith(magic))
    for offset, width, order in fields(data):
        if offset + width > len(data):
            continue
        kind = {1: "B", 2: "H", 4: "I"}[width]
        for value in (0, 1, BIG_LENGTHS[width]):
            mutant = bytearray(data)
            struct.pack_into(f"{order}{kind}", mutant, offset, value)
            yield bytes(mutant)


def mutants(data: bytes, rng: np.random.Generator) -> Iterator[bytes]:
    """Every broken variant of one valid image, in a fixed order."""
    yield from (data[:cut] for cut in range(min(len(data), HEAD_BYTES)))
    if len(data) > HEAD_BYTES:
        yield from (data[:cut] for cut in np.linspace(HEAD_BYTES, len(data) - 1, LATER_OFFSETS).astype(int))
    for _ in range(FLIP_MUTANTS):
        mutant = np.frombuffer(data, np.uint8).copy()
        where = rng.integers(0, len(data), rng.integers(1, 9))
        mutant[where] ^= rng.integers(1, 256, len(where), dtype=np.uint8)
        yield mutant.tobytes()
    yield from length_field_mutants(data)


def _multipart(client: TestClient, path: str, data: bytes, field: str = MULTIPART_FILE) -> int:
    return client.post(path, files={field: ("fuzz", data, "application/octet-stream")}).status_code


def _raw(client: TestClient, path: str, data: bytes) -> int:
    return client.post(path, content=data, headers={"Content-Type": "image/png"}).status_code


def _batch(client: TestClient, path: str, data: bytes) -> int:
    """The batch's own status: an item's bad image is its own 4xx error inside a 200, a bug makes the whole a 500."""
    return client.post(path, files=[("files", ("fuzz", data, "image/png"))]).status_code


ENDPOINTS: list[tuple[str, Callable[[TestClient, bytes], int]]] = [
    ("POST /predict multipart", lambda client, data: _multipart(client, "/predict", data)),
    ("POST /predict raw", lambda client, data: _raw(client, "/predict?model=lenet", data)),
    ("POST /predict/batch", lambda client, data: _batch(client, "/predict/batch", data)),
    ("POST /activations multipart", lambda client, data: _multipart(client, "/activations?model=svm", data)),
    ("POST /activations raw", lambda client, data: _raw(client, "/activations?encoding=base64", data)),
    ("POST /read multipart", lambda client, data: _multipart(client, "/read", data)),
    ("POST /read/batch", lambda client, data: _batch(client, "/read/batch?model=lenet", data)),
]
BATCHES = {"POST /predict/batch", "POST /read/batch"}  # a broken image is a 4xx item inside their 200


@pytest.fixture(scope="module")
def digit(mnist_sample: Mnist) -> np.ndarray:
    return mnist_sample.test.images[0]  # a 7


def _assert_still_serving(client: TestClient, valid: bytes, expected: int) -> None:
    response = client.post("/predict", files={"file": ("ok.png", valid, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == expected


def _preparation_failure(data: bytes) -> str | None:
    """What went wrong when preparing the data raised anything but a 4xx ServiceError; None when all is well."""
    try:
        preprocess(data)
    except ServiceError as error:
        status = http_status(error)
        return None if 400 <= status < 500 else f"{error.code} ({status})"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


@pytest.mark.parametrize("name", SEEDS)
def test_broken_images_get_4xx_never_5xx(client: TestClient, digit: np.ndarray, name: str) -> None:
    valid = SEEDS[name](_seed_image(digit))
    assert preprocess(valid).shape == (28, 28)  # the seed itself is a readable digit
    rng = np.random.default_rng(list(SEEDS).index(name))
    failures: list[str] = []
    for index, mutant in enumerate(mutants(valid, rng)):
        failure = _preparation_failure(mutant)
        if failure:
            failures.append(f"#{index} ({len(mutant)} bytes): {failure}")
        elif index % HTTP_EVERY == 0:
            label, send = ENDPOINTS[(index // HTTP_EVERY) % len(ENDPOINTS)]
            status = send(client, mutant)
            if status >= 500:
                failures.append(f"#{index} ({len(mutant)} bytes): {label} answered {status}")
    assert not failures, f"{name}: {len(failures)} inputs broke the service, e.g. {failures[:5]}"
    _assert_still_serving(client, valid, 7)


def regression_inputs() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.bin"))


@pytest.mark.parametrize("path", regression_inputs(), ids=lambda path: path.stem)
def test_inputs_that_once_failed_are_4xx_everywhere(client: TestClient, digit: np.ndarray, path: Path) -> None:
    data = path.read_bytes()
    for label, send in ENDPOINTS:
        status = send(client, data)
        assert status < 500, f"{label}: {status}"
        assert status != 200 or label in BATCHES, f"{label}: a broken image was read"
    _assert_still_serving(client, encode(_seed_image(digit)), 7)


def test_the_regression_corpus_is_there() -> None:
    assert len(regression_inputs()) >= 5
