"""POST /read: a number written on one line, read digit by digit; errors as /predict's."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.cards import read_card
from app.reading import PIECE_CONFIDENCE, line_confidence, plan_upload, text_log_likelihood
from app.runtime.line_reader import read_line
from app.runtime.session import CPU
from tests.app.routes.test_errors import BAD_UPLOADS
from tests.helpers import MODELS_DIR, encode
from training.data import Mnist


def number_of(mnist: Mnist, indices: list[int], *, cell: int = 40) -> np.ndarray:
    """The digits side by side, dark ink on white paper, each in a cell of `cell` px."""
    row = np.zeros((cell, cell * len(indices)), np.uint8)
    for k, index in enumerate(indices):
        row[6:34, k * cell + 6 : k * cell + 34] = mnist.test.images[index]
    return 255 - row


def test_read_multipart(client: TestClient, mnist_sample: Mnist) -> None:
    indices = [1, 3, 2, 8]  # 2 0 1 5
    image = encode(number_of(mnist_sample, indices))
    response = client.post("/read", files={"file": ("n.png", image, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "".join(str(mnist_sample.test.labels[i]) for i in indices)
    assert set(body) == {"text", "confidence", "model", "model_version", "digits", "ignored"}
    assert (body["model"], body["model_version"]) == ("cnn", "1")
    # The whole text's confidence: each digit's, tempered by the piece verifier's score for its box, weighed with the
    # line reader's probability of the text.
    weighed = [d["confidence"] * d["piece_score"] ** PIECE_CONFIDENCE for d in body["digits"]]
    line = ort.InferenceSession(str(MODELS_DIR / "cnn" / "line.onnx"), providers=[CPU])
    frames = read_line(line, plan_upload(image).line)
    section = read_card(MODELS_DIR / "cnn").line_reader
    assert section is not None
    assert section.weighing is not None
    confidence = section.weighing.confidence
    expected = line_confidence(float(np.prod(weighed)), text_log_likelihood(frames, body["text"]), confidence)
    assert body["confidence"] == pytest.approx(expected, rel=1e-5)
    assert body["ignored"] == []
    for k, digit in enumerate(body["digits"]):
        assert set(digit) == {
            "digit", "confidence", "is_digit", "digit_score", "box", "probabilities", "piece_score", "pair",
            "activations_url",
        }  # fmt: skip
        assert digit["confidence"] == max(digit["probabilities"])
        assert digit["is_digit"] is True
        assert 0 <= digit["digit_score"] <= 1
        assert 0.5 < digit["piece_score"] <= 1  # each a whole digit
        x, y, width, height = digit["box"]
        assert k * 40 + 6 <= x  # inside the digit's own cell
        assert x + width <= k * 40 + 34
        assert y >= 6
        assert y + height <= 34
        assert digit["activations_url"].startswith("http://testserver/activations?input=")


@pytest.mark.parametrize("cell", [50, 60, 90])
def test_a_number_written_in_a_form_s_boxes_is_read_with_confidence(
    client: TestClient, mnist_sample: Mnist, cell: int
) -> None:
    """Digits a box apart (blanks 1.9-3.9 digit heights wide): the line reader reads them as it learnt lines, its
    blanks narrowed, and agrees with the graph, instead of doubting a text it never saw so spaced (a confidence of
    0.42 in 90-px cells before). With the card's confidence fitted on validation digits (stop 36): 0.88 in 50-px
    cells, 0.98 in 60 and 90."""
    body = client.post("/read", files={"file": encode(number_of(mnist_sample, [1, 3, 2, 8], cell=cell))}).json()
    assert body["text"] == "2015"
    assert body["confidence"] > 0.85


def test_activations_of_a_digit_are_what_the_model_saw(client: TestClient, mnist_sample: Mnist) -> None:
    body = client.post("/read?model=lenet", files={"file": encode(number_of(mnist_sample, [0, 1]))}).json()
    assert body["model"] == "lenet"
    maps = client.get(body["digits"][1]["activations_url"])
    assert maps.status_code == 200
    assert maps.json()["model"] == "lenet"
    assert np.asarray(maps.json()["input"]).shape == (28, 28)


def test_boxes_are_in_the_uploaded_pixels_of_a_large_rotated_jpeg(client: TestClient, mnist_sample: Mnist) -> None:
    """A 3000-px photo stored on its side with EXIF orientation 6: decoded reduced and turned upright, the boxes
    are those of the upright picture at full size."""
    upright = Image.fromarray(number_of(mnist_sample, [0, 1, 2])).resize((3000, 1000), Image.Resampling.BICUBIC)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the camera's sensor layout; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    response = client.post("/read", content=buffer.getvalue(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "721"
    scale = 3000 / 120
    for k, digit in enumerate(body["digits"]):
        x, y, width, height = digit["box"]
        ink = np.flatnonzero(mnist_sample.test.images[[0, 1, 2][k]].any(axis=0))
        assert abs(x - (k * 40 + 6 + ink[0]) * scale) <= 2 * scale
        assert abs(x + width - (k * 40 + 6 + ink[-1] + 1) * scale) <= 2 * scale
        assert y >= 0
        assert y + height <= 1000


def test_a_number_with_a_decimal_point(client: TestClient, mnist_sample: Mnist) -> None:
    paper = number_of(mnist_sample, [0, 1, 2])
    paper[30:34, 38:42] = 0  # a point on the baseline between the 7 and the 2
    body = client.post("/read", files={"file": encode(paper)}).json()
    assert body["text"] == "721"
    assert body["ignored"] == [{"box": [38, 30, 4, 4], "reason": "dot"}]


@pytest.mark.parametrize(
    ("paper", "message"),
    [
        (np.full((60, 200), 255, np.uint8), "blank"),
        (np.pad(np.zeros((3, 180), np.uint8), ((30, 30), (10, 10)), constant_values=255), "only"),
    ],
    ids=["blank paper", "only a line"],
)
def test_no_digits(client: TestClient, paper: np.ndarray, message: str) -> None:
    response = client.post("/read", files={"file": encode(paper)})
    assert response.status_code == 422
    assert response.json()["code"] == "no_digits"
    assert message in response.json()["detail"]


# /read refuses what /predict refuses, with the same codes; a blank image has no digits to read.
READ_BAD_UPLOADS = [
    (name, kwargs, status, "no_digits" if code == "blank_image" else code, "" if code == "blank_image" else message)
    for name, kwargs, status, code, message in BAD_UPLOADS
]


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "code", "message"), READ_BAD_UPLOADS, ids=[c[0] for c in READ_BAD_UPLOADS]
)
def test_bad_upload(client: TestClient, name: str, request_kwargs: dict, status: int, code: str, message: str) -> None:
    response = client.post("/read", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert message in response.json()["detail"]


def test_unknown_model(client: TestClient, mnist_sample: Mnist) -> None:
    response = client.post("/read?model=nope", files={"file": encode(number_of(mnist_sample, [0, 1]))})
    assert (response.status_code, response.json()["code"]) == (404, "unknown_model")


def test_batch_reads_each_file_in_order(client: TestClient, mnist_sample: Mnist) -> None:
    """Each file read as /read reads it; a file that cannot be read gets its own error, the others are read."""
    numbers = {"a.png": [1, 3, 2, 8], "b.png": [0, 1]}
    files = [
        ("files", (name, encode(number_of(mnist_sample, indices)), "image/png")) for name, indices in numbers.items()
    ]
    files.insert(1, ("files", ("blank.png", encode(np.full((60, 200), 255, np.uint8)), "image/png")))
    files.append(("files", ("text.png", b"not an image", "image/png")))
    response = client.post("/read/batch?model=lenet", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "lenet"
    results = body["results"]
    assert [r["filename"] for r in results] == ["a.png", "blank.png", "b.png", "text.png"]
    assert [r["error"]["code"] if r["error"] else None for r in results] == [None, "no_digits", None, "not_an_image"]
    for result, indices in zip([results[0], results[2]], numbers.values(), strict=True):
        alone = client.post("/read?model=lenet", files={"file": encode(number_of(mnist_sample, indices))}).json()
        assert result["reading"]["text"] == "".join(str(mnist_sample.test.labels[i]) for i in indices)
        assert result["reading"] == alone


def test_batch_limit(client: TestClient, mnist_sample: Mnist) -> None:
    files = [("files", ("n.png", encode(number_of(mnist_sample, [0, 1])), "image/png"))] * 9
    response = client.post("/read/batch", files=files)
    assert (response.status_code, response.json()["code"]) == (400, "too_many_files")


def test_openapi_documents_the_route(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/read"]["post"]
    assert set(operation["requestBody"]["content"]) >= {"multipart/form-data", "image/png", "image/*"}
    assert operation["parameters"][0]["name"] == "model"
    assert {"200", "400", "413", "415", "422"} <= set(operation["responses"])
    assert operation["responses"]["422"]["content"]["application/json"]["example"]["code"] == "no_digits"
    schema = client.get("/openapi.json").json()["components"]["schemas"]["NumberReading"]
    assert schema["properties"]["text"]["examples"] == ["2026"]
    batch = client.get("/openapi.json").json()["paths"]["/read/batch"]["post"]
    assert "multipart/form-data" in batch["requestBody"]["content"]
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchReading"
    }
