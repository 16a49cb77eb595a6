"""Every bad input gets a 4xx `{"detail", "code"}` that says what to fix; none gets a 5xx; the service goes on."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers import encode
from training.data import Mnist


def truncated(fmt: str) -> bytes:
    data = encode(Image.radial_gradient("L").resize((300, 300)), fmt)
    return data[: len(data) // 3]


BAD_UPLOADS = [
    ("empty multipart file", {"files": {"file": ("e.png", b"", "image/png")}}, 400, "empty_body", "no image"),
    ("empty raw body", {"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty_body", "no image"),
    ("no body at all", {}, 400, "empty_body", "no image"),
    ("text named .png", {"files": {"file": ("a.png", b"hello", "image/png")}}, 415, "not_an_image", "not an image"),
    ("pdf named .png", {"files": {"file": ("a.png", b"%PDF-1.4 x", "image/png")}}, 415, "not_an_image", "PNG, JPEG"),
    (
        "svg named .png",
        {"files": {"file": ("a.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png")}},
        415,
        "not_an_image",
        "not an image",
    ),
    ("ppm", {"files": {"file": ("a.ppm", encode(np.ones((5, 5), np.uint8), "PPM"))}}, 415, "unsupported_format", "PPM"),
    ("truncated png", {"files": {"file": ("a.png", truncated("PNG"))}}, 400, "truncated_image", "truncated"),
    ("truncated jpeg", {"files": {"file": ("a.jpg", truncated("JPEG"))}}, 400, "truncated_image", "truncated"),
    ("blank white", {"files": {"file": encode(np.full((64, 64), 255, np.uint8))}}, 422, "blank_image", "blank"),
    ("1x1 image", {"files": {"file": encode(np.zeros((1, 1), np.uint8))}}, 422, "blank_image", "blank"),
    (
        "decompression bomb",
        {"files": {"file": encode(Image.new("1", (20000, 20000)))}},
        413,
        "image_too_large",
        "pixels",
    ),
    (
        "over the size limit",
        {"content": b"\x89PNG" + b"\0" * 2_100_000, "headers": {"content-type": "image/png"}},
        413,
        "payload_too_large",
        "limit is 2 MB",
    ),
    (
        "wrong content type",
        {"content": b"abc", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
        "multipart/form-data",
    ),
    ("json body", {"json": {"image": "x"}}, 415, "unsupported_media_type", "image/*"),
    (
        "missing form field",
        {"files": {"picture": encode(np.ones((5, 5), np.uint8))}},
        400,
        "missing_file",
        "no field 'file'",
    ),
    ("text form field", {"data": {"file": "not a file"}, "files": {"other": b"x"}}, 400, "missing_file", "file upload"),
    ("two files for one", {"files": [("file", b"a"), ("file", b"b")]}, 400, "too_many_files", "/predict/batch"),
    (
        "malformed multipart",
        {"content": b"not a form", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        400,
        "malformed_form",
        "malformed",
    ),
]


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "code", "message"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS]
)
@pytest.mark.parametrize("path", ["/predict", "/activations"])
def test_bad_upload(
    client: TestClient, path: str, name: str, request_kwargs: dict, status: int, code: str, message: str
) -> None:
    response = client.post(path, **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert message in body["detail"]
    assert set(body) == {"detail", "code"}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/predict?model=nope", 404, "unknown_model"),
        ("/predict?model=../../etc/passwd", 404, "unknown_model"),
        ("/predict?model=" + "x" * 100, 422, "invalid_request"),
        ("/predict/batch?model=nope", 404, "unknown_model"),
        ("/nowhere", 404, "not_found"),
    ],
)
def test_bad_model_or_route(client: TestClient, mnist_sample: Mnist, path: str, status: int, code: str) -> None:
    response = client.post(path, files={"file": encode(mnist_sample.test.images[0])})
    assert response.status_code == status
    assert response.json()["code"] == code


def test_oversized_body_is_refused_before_it_is_read(client: TestClient) -> None:
    def endless() -> bytes:
        chunk = b"\0" * 65536
        for _ in range(1000):  # 65 MB if it were all read; the limit is 2 MB
            yield chunk

    response = client.post("/predict", content=endless(), headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_method_not_allowed_is_json(client: TestClient) -> None:
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_service_still_answers_after_the_bad_inputs(client: TestClient, mnist_sample: Mnist) -> None:
    for _, kwargs, *_ in BAD_UPLOADS:
        assert client.post("/predict", **kwargs).status_code < 500
    response = client.post("/predict", files={"file": encode(mnist_sample.test.images[0])})
    assert response.json()["digit"] == 7


def animated_gif(image: np.ndarray) -> bytes:
    frames = [Image.fromarray(image), Image.fromarray(np.zeros_like(image)), Image.fromarray(255 - image)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def transparent_png(image: np.ndarray, mode: str) -> bytes:
    """Dark ink on a transparent background, as a 16-bit grey or a palette PNG with a transparency chunk."""
    if mode == "I;16":
        picture = Image.fromarray((255 - image).astype(np.uint16) * 257).convert("I;16")
        return encode(picture, "PNG", transparency=65535)
    return encode(Image.fromarray(255 - image).convert("P"), "PNG", transparency=255)


UNUSUAL_BUT_VALID = [
    ("animated gif: first frame", animated_gif),
    ("cmyk jpeg", lambda d: encode(Image.fromarray(255 - d).resize((84, 84)).convert("CMYK"), "JPEG", quality=95)),
    ("16-bit png with transparency", lambda d: transparent_png(d, "I;16")),
    ("palette png with transparency", lambda d: transparent_png(d, "P")),
]


@pytest.mark.parametrize(("name", "make"), UNUSUAL_BUT_VALID, ids=[c[0] for c in UNUSUAL_BUT_VALID])
def test_unusual_but_valid_images_are_classified(client: TestClient, mnist_sample: Mnist, name: str, make) -> None:
    response = client.post("/predict?model=lenet", files={"file": make(mnist_sample.test.images[0])})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == 7


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"abc", "headers": {"content-type": "image/png"}}, 415, "unsupported_media_type"),
        ({"files": {"other": b"x"}}, 400, "missing_file"),
        ({"data": {"files": "text"}, "files": {"x": b"y"}}, 400, "missing_file"),
    ],
)
def test_bad_batch_requests(client: TestClient, kwargs: dict, status: int, code: str) -> None:
    response = client.post("/predict/batch", **kwargs)
    assert response.status_code == status
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/models/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        ("/models/%00", 404, "unknown_model"),
        ("/models/cnn/templates", 404, "no_templates"),
        ("/models/nope/templates", 404, "unknown_model"),
        ("/activations?input=" + "A" * 5000, 422, "invalid_request"),
        ("/activations?input=AQ", 400, "bad_token"),
        ("/activations?input=AXjaY2AYBaNgFIyCUTAKRsEoGAUDAQAAcAAB", 400, "bad_token"),
    ],
)
def test_bad_get_requests(client: TestClient, path: str, status: int, code: str) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
