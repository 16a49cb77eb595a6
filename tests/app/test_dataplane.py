"""The core without any transport: bytes and arrays in, results out, errors with codes only."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import Awaitable, Iterator
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import numpy as np
import pytest
from PIL import Image

from app import dataplane as dataplane_module
from app.admission import Budget, DecodePool
from app.cards import LINE_INPUT, PAIR_INPUT
from app.dataplane import (
    CONCURRENT_EXPLANATIONS,
    NOT_A_DIGIT,
    DataPlane,
    digit_png,
    digit_verdict,
    encoded_map,
    layer_maps,
    make_prediction,
    number_reading,
    wanted_outputs,
)
from app.errors import (
    BadSetting,
    BadTarget,
    BlankImage,
    ImageTooLarge,
    InvalidInferenceRequest,
    NoDigits,
    UnknownLayer,
    UnknownMethod,
    UnknownModel,
)
from app.explain import Options
from app.main import runtime_config
from app.preprocess import Limits
from app.reading import PIECE_CONFIDENCE, Ignored, ReadDigit, Reading, line_confidence, text_log_likelihood
from app.runtime.model import LoadedModel
from app.runtime.registry import load_registry
from app.settings import Settings
from app.tensors import TensorInput
from app.tokens import decode_token, encode_token
from tests.helpers import MODELS_DIR, encode
from training.data import Mnist

T = TypeVar("T")
BASE = "https://digits.example/"


@pytest.fixture(scope="module")
def dataplane() -> Iterator[DataPlane]:
    settings = Settings(models_dir=MODELS_DIR, token_key="dataplane-test-key", max_batch_images=8)
    config = runtime_config(Settings(batching=False, model_process=False, intra_op_threads=1))
    registry = asyncio.run(load_registry(MODELS_DIR, default_model="cnn", config=config))
    pool = DecodePool(Budget(settings.decode_budget_pixels, 1.0, "decoded pixels", "MNIST_DECODE_BUDGET_PIXELS"), 1)
    yield DataPlane(registry, settings, pool)
    pool.close()


def run(awaitable: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await awaitable

    return asyncio.run(wrapped())


def test_classify_takes_bytes_and_a_base_url(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    digit = mnist_sample.test.images[0]
    large = encode(Image.fromarray(255 - digit).resize((300, 300)), "JPEG")  # decoded in the pool, not inline
    for data in (encode(digit), large):
        prediction = run(dataplane.classify(data, model="lenet", base_url=BASE, debug=True))
        assert prediction.digit == mnist_sample.test.labels[0]
        assert prediction.model == "lenet"
        assert prediction.activations_url.startswith(f"{BASE}activations?input=")
        assert prediction.input_png is not None


def test_a_batch_answers_each_file(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    uploads = [("a.png", encode(mnist_sample.test.images[1])), ("blank.png", encode(np.zeros((28, 28), np.uint8)))]
    batch = run(dataplane.classify_batch(uploads, model=None, base_url=BASE))
    assert batch.model == "cnn"
    assert batch.results[0].prediction is not None
    assert batch.results[0].prediction.digit == mnist_sample.test.labels[1]
    assert batch.results[1].error is not None
    assert batch.results[1].error.code == BlankImage.code


def test_activations_of_an_upload_and_of_its_token(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    data = encode(mnist_sample.test.images[2])
    token = run(dataplane.classify(data, model="lenet", base_url=BASE)).activations_url.split("input=")[1]
    token = token.split("&")[0]
    from_upload = run(dataplane.activations(data, model="lenet", layers=["conv2"], encoding="json"))
    from_token = run(dataplane.activations(token, model="lenet", layers=["conv2"], encoding="json"))
    assert from_upload.layers[0].shape == [64, 14, 14]
    assert from_upload == from_token


def test_tensors_in_outputs_out(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    pixels = mnist_sample.test.images[:3].ravel()
    image = TensorInput("image", "UINT8", (3, 28, 28, 1), pixels)
    result = run(dataplane.infer_tensors(model="cnn", version="1", inputs=[image], outputs=["digit_score", "logits"]))
    assert (result.model, result.version, list(result.outputs)) == ("cnn", "1", ["digit_score", "logits"])
    assert result.outputs["logits"].argmax(1).tolist() == mnist_sample.test.labels[:3].tolist()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda d: d.classify(b"", model="resnet", base_url=BASE), UnknownModel, "Unknown model 'resnet'"),
        (lambda d: d.activations(b"", model="cnn", layers=["fc9"], encoding="json"), UnknownLayer, "no layer 'fc9'"),
        (
            lambda d: d.infer_tensors(model="cnn", version=None, inputs=[], outputs=None),
            InvalidInferenceRequest,
            "exactly one input",
        ),
        (
            lambda d: d.infer_tensors(
                model="cnn", version=None, inputs=[TensorInput("image", "UINT8", (9, 28, 28, 1), None)], outputs=None
            ),
            InvalidInferenceRequest,
            "at most 8",
        ),
    ],
)
def test_errors_carry_a_code_and_a_message(dataplane: DataPlane, call, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        run(call(dataplane))


# Each function of the core, alone: what mutation testing runs against app/dataplane.py (docs/mutation.md).


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["input"][0]


def card_without_detector(dataplane: DataPlane) -> LoadedModel:
    card = dataplane.model("cnn").card
    assert card is not None
    return LoadedModel(name="plain", card=card.model_copy(update={"detector": None}))


def test_a_model_without_a_detector_calls_everything_a_digit(dataplane: DataPlane) -> None:
    plain = card_without_detector(dataplane)
    outputs = {"probabilities": np.eye(10, dtype=np.float32)[[5, 3]]}
    assert wanted_outputs(plain) == ["probabilities"]
    assert digit_verdict(plain, outputs, 1) == (True, 1.0)
    prediction = make_prediction(
        model=plain, digit=np.zeros((28, 28), np.uint8), outputs=outputs, index=1, base_url=BASE, token_key="k"
    )
    assert (prediction.digit, prediction.is_digit, prediction.digit_score, prediction.detail) == (3, True, 1.0, None)


def test_the_detector_score_of_each_image_decides_at_its_threshold(dataplane: DataPlane) -> None:
    cnn = dataplane.model("cnn")
    assert cnn.card is not None
    assert cnn.card.detector is not None
    threshold = cnn.card.detector.threshold
    assert wanted_outputs(cnn) == ["probabilities", "digit_score"]
    scores = np.array([[0.99], [threshold], [np.nextafter(threshold, 0)]])  # float64: the threshold exactly
    outputs = {"digit_score": scores}
    assert digit_verdict(cnn, outputs, 0) == (True, 0.99)
    assert digit_verdict(cnn, outputs, 1) == (True, threshold)  # at the threshold: a digit
    assert digit_verdict(cnn, outputs, 2) == (False, np.nextafter(threshold, 0))


def test_a_prediction_says_which_digit_how_sure_and_where_its_maps_are(
    dataplane: DataPlane, mnist_sample: Mnist
) -> None:
    cnn = dataplane.model("cnn")
    renamed = LoadedModel(name="cnn v2/b", card=cnn.card)  # quoted in the links
    digit = mnist_sample.test.images[0]
    probabilities = np.full((2, 10), 0.05, np.float32)
    probabilities[1, 4] = 0.55
    outputs = {"probabilities": probabilities, "digit_score": np.array([[0.9], [0.1]], np.float32)}
    prediction = make_prediction(model=renamed, digit=digit, outputs=outputs, index=1, base_url=BASE, token_key="k")
    assert prediction.digit == 4
    assert prediction.confidence == pytest.approx(0.55)
    assert prediction.probabilities == pytest.approx(probabilities[1].tolist())
    assert (prediction.is_digit, prediction.digit_score) == (False, pytest.approx(0.1))
    assert prediction.detail == NOT_A_DIGIT.format(score=0.1, threshold=0.425351)
    assert prediction.detail is not None
    assert "(digit_score 0.10 is below 0.43)" in prediction.detail
    assert (prediction.model, prediction.model_version) == ("cnn v2/b", "1")
    assert prediction.activations_url == f"{BASE}activations?input={encode_token(digit, 'k')}&model=cnn%20v2/b"
    assert prediction.explain_url == f"{BASE}explain?input={encode_token(digit, 'k')}&model=cnn%20v2/b"
    assert np.array_equal(decode_token(token_of(prediction.activations_url), "k"), digit)
    assert prediction.input_png is None


def test_maps_as_json_keep_five_decimals_and_as_base64_every_bit(dataplane: DataPlane) -> None:
    values = np.array([[0.123456789, -1.5], [2.0, 1e-7]], np.float32)
    f32 = [float(np.float32(v)) for v in (0.12346, 0.24691)]  # rounded in float32, as the maps are
    assert encoded_map(values, "json") == [[f32[0], -1.5], [2.0, 0.0]]
    assert np.array_equal(np.frombuffer(base64.b64decode(encoded_map(values, "base64")), "<f4").reshape(2, 2), values)
    maps = np.stack([values, values * 2])
    as_json = layer_maps("conv9", maps, "json")
    assert (as_json.name, as_json.shape, as_json.encoding) == ("conv9", [2, 2, 2], "json")
    assert (as_json.min, as_json.max) == (pytest.approx(-3.0), pytest.approx(4.0))
    assert as_json.data == [[[f32[0], -1.5], [2.0, 0.0]], [[f32[1], -3.0], [4.0, 0.0]]]
    as_base64 = layer_maps("conv9", maps, "base64")
    assert (as_base64.shape, as_base64.encoding, as_base64.min) == ([2, 2, 2], "base64", as_json.min)
    assert isinstance(as_base64.data, str)
    assert np.array_equal(np.frombuffer(base64.b64decode(as_base64.data), "<f4").reshape(2, 2, 2), maps)


def test_the_debug_picture_is_the_digit_the_model_saw(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    digit = mnist_sample.test.images[4]
    picture = Image.open(io.BytesIO(base64.b64decode(digit_png(digit))))
    assert (picture.format, picture.mode) == ("PNG", "L")
    assert np.array_equal(np.asarray(picture), digit)
    prediction = run(dataplane.classify(encode(digit), model=None, base_url=BASE, debug=True))
    assert prediction.input_png == digit_png(digit)
    assert prediction.model == "cnn"  # the default
    assert run(dataplane.classify(encode(digit), model=None, base_url=BASE)).input_png is None


def test_a_model_serves_only_its_own_version(dataplane: DataPlane) -> None:
    assert dataplane.model("cnn", "1").name == "cnn"
    assert dataplane.model("cnn", None).name == "cnn"
    with pytest.raises(UnknownModel, match=r"Unknown model 'cnn version 2'.*cnn version 1"):
        dataplane.model("cnn", "2")


@pytest.mark.parametrize(("width", "inline"), [(64, True), (65, False)])
def test_an_image_of_up_to_64x64_pixels_is_decoded_inline_a_larger_one_in_the_pool(
    dataplane: DataPlane, width: int, inline: bool
) -> None:
    data = encode(np.full((64, width), 200, np.uint8))

    def work(upload: bytes, limits: Limits) -> tuple[str, bytes, Limits]:
        return threading.current_thread().name, upload, limits

    thread, upload, limits = run(dataplane.decoded(data, work))
    assert thread.startswith("decode") is not inline
    assert (upload, limits) == (data, dataplane.limits)
    assert limits.max_pixels == dataplane.settings.max_image_pixels


def test_a_plain_mnist_png_is_used_as_it_is(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    digit = mnist_sample.test.images[5]
    assert np.array_equal(run(dataplane.prepare(encode(digit))), digit)
    photo = encode(Image.fromarray(255 - digit).resize((56, 56)))  # not MNIST's own layout: prepared
    prepared = run(dataplane.prepare(photo))
    assert prepared.shape == (28, 28)
    assert not np.array_equal(prepared, 255 - np.asarray(Image.fromarray(255 - digit).resize((28, 28))))


def test_a_batch_keeps_each_files_place_around_failures(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    blank = encode(np.zeros((28, 28), np.uint8))
    uploads = [
        ("bad.png", blank),
        ("a.png", encode(mnist_sample.test.images[1])),
        (None, b"not an image"),
        ("b.png", encode(mnist_sample.test.images[0])),
    ]
    batch = run(dataplane.classify_batch(uploads, model="lenet", base_url=BASE))
    assert batch.model == "lenet"
    assert [item.filename for item in batch.results] == ["bad.png", "a.png", None, "b.png"]
    first, second = batch.results[1].prediction, batch.results[3].prediction
    assert first is not None
    assert second is not None
    assert (first.digit, second.digit) == (mnist_sample.test.labels[1], mnist_sample.test.labels[0])
    assert first.model == "lenet"
    assert second.activations_url.startswith(f"{BASE}activations?input=")
    assert np.array_equal(
        decode_token(token_of(second.activations_url), dataplane.settings.token_key), mnist_sample.test.images[0]
    )
    errors = [(item.error.code, item.prediction) for item in batch.results[::2] if item.error is not None]
    assert errors == [("blank_image", None), ("not_an_image", None)]
    assert batch.results[0].error is not None
    assert "blank" in batch.results[0].error.detail
    nothing = run(dataplane.classify_batch([("x.png", blank)], model=None, base_url=BASE))  # no model call at all
    assert nothing.results[0].error is not None
    assert nothing.results[0].prediction is None


def test_activations_in_base64_are_the_json_maps_with_every_bit(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    data = encode(mnist_sample.test.images[2])
    as_json = run(dataplane.activations(data, model="lenet", layers=["conv1", "conv2"], encoding="json"))
    as_base64 = run(dataplane.activations(data, model="lenet", layers=["conv1", "conv2"], encoding="base64"))
    assert (as_json.model, as_json.model_version, as_json.kind) == ("lenet", "1", "cnn")  # not the default model
    assert as_json.input == mnist_sample.test.images[2].tolist()
    assert [layer.name for layer in as_base64.layers] == ["conv1", "conv2"]
    for json_layer, base64_layer in zip(as_json.layers, as_base64.layers, strict=True):
        assert isinstance(base64_layer.data, str)
        maps = np.frombuffer(base64.b64decode(base64_layer.data), "<f4").reshape(base64_layer.shape)
        np.testing.assert_allclose(maps, np.asarray(json_layer.data), atol=1e-5)


def test_tensors_without_named_outputs_get_every_output_of_the_card(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    image = TensorInput("image", "UINT8", (2, 28, 28, 1), mnist_sample.test.images[:2].ravel())
    result = run(dataplane.infer_tensors(model="lenet", version=None, inputs=[image], outputs=None))
    assert (result.model, result.version) == ("lenet", "1")
    assert list(result.outputs) == ["logits", "probabilities", "conv1", "conv2", "digit_score"]
    assert result.outputs["probabilities"].argmax(1).tolist() == mnist_sample.test.labels[:2].tolist()
    with pytest.raises(UnknownModel, match="lenet version 7"):
        run(dataplane.infer_tensors(model="lenet", version="7", inputs=[image], outputs=None))


def number_of(mnist: Mnist, indices: list[int], *, step: int = 40) -> bytes:
    """The digits side by side, `step` px apart (closer than 28: their ink joins), dark ink on white paper, as a
    PNG."""
    row = np.zeros((40, step * (len(indices) - 1) + 40), np.uint8)
    for k, index in enumerate(indices):
        field = row[6:34, k * step + 6 : k * step + 34]
        np.maximum(field, mnist.test.images[index], out=field)
    return encode(255 - row)


def test_a_number_is_read_digit_by_digit_in_one_model_call(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    indices = [1, 3, 2]
    reading = run(dataplane.read_number(number_of(mnist_sample, indices), model="lenet", base_url=BASE))
    assert reading.text == "".join(str(mnist_sample.test.labels[i]) for i in indices)
    assert (reading.model, reading.model_version) == ("lenet", "1")
    assert reading.confidence == pytest.approx(np.prod([d.confidence for d in reading.digits]))
    for k, digit in enumerate(reading.digits):
        assert digit.confidence == max(digit.probabilities)
        assert digit.is_digit
        assert 0 < digit.digit_score <= 1
        x, _, width, _ = digit.box
        assert k * 40 + 6 <= x
        assert x + width <= k * 40 + 34
        assert digit.activations_url.startswith(f"{BASE}activations?input=")


def test_a_batch_of_numbers_reads_each_file_with_one_model_call(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, calls = dataplane.model("lenet"), []
    infer = loaded.infer

    async def counted(images: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        calls.append(len(images))
        return await infer(images, outputs)

    monkeypatch.setattr(loaded, "infer", counted)
    uploads = [
        ("a.png", number_of(mnist_sample, [1, 3, 2])),
        (None, b"not an image"),
        ("blank.png", encode(np.full((40, 120), 255, np.uint8))),
        ("b.png", number_of(mnist_sample, [0, 4])),
    ]
    batch = run(dataplane.read_numbers(uploads, model="lenet", base_url=BASE))
    assert batch.model == "lenet"
    assert [item.filename for item in batch.results] == ["a.png", None, "blank.png", "b.png"]
    labels = mnist_sample.test.labels
    assert [item.reading.text if item.reading else item.error.code for item in batch.results] == [
        f"{labels[1]}{labels[3]}{labels[2]}",
        "not_an_image",
        "no_digits",
        f"{labels[0]}{labels[4]}",
    ]
    assert len(calls) == 2  # each readable image in one call; nothing to call the model for in the others
    first = batch.results[0].reading
    assert first is not None
    assert all(d.activations_url.startswith(BASE) for d in first.digits)


def test_a_batch_file_the_reading_finds_no_digit_in_gets_its_own_error(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resolve's NoDigits (every piece a passed mark) for the first file only: the second is still read."""
    real, seen = dataplane_module.resolve, []

    def first_has_none(*args: object, **kwargs: object) -> Reading:
        seen.append(1)
        if len(seen) == 1:
            raise NoDigits("Nothing in the image looks like a digit.")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dataplane_module, "resolve", first_has_none)
    uploads = [("a.png", number_of(mnist_sample, [1, 3])), ("b.png", number_of(mnist_sample, [0, 4]))]
    batch = run(dataplane.read_numbers(uploads, model="lenet", base_url=BASE))
    assert [item.filename for item in batch.results] == ["a.png", "b.png"]
    assert batch.results[0].error is not None
    assert batch.results[0].error.code == "no_digits"
    assert batch.results[0].reading is None
    labels = mnist_sample.test.labels
    assert batch.results[1].reading is not None
    assert batch.results[1].reading.text == f"{labels[0]}{labels[4]}"


def test_a_reading_reports_each_digits_own_verdict_pixels_and_box(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    cnn = dataplane.model("cnn")
    pixels = [mnist_sample.test.images[0], mnist_sample.test.images[1]]
    digits = [
        ReadDigit(
            digit=7,
            confidence=0.9,
            probabilities=[0.01] * 7 + [0.9] + [0.01] * 2,
            box=(1, 2, 3, 4),
            pixels=pixels[0],
            row=2,
        ),
        ReadDigit(
            digit=2,
            confidence=0.8,
            probabilities=[0.02] * 2 + [0.8] + [0.02] * 7,
            box=(5, 6, 7, 8),
            pixels=pixels[1],
            row=0,
        ),
    ]
    reading = Reading(text="72", confidence=0.72, digits=digits, ignored=[Ignored(box=(9, 9, 2, 2), reason="dot")])
    outputs = {"digit_score": np.array([[0.1], [0.5], [0.9]], np.float32)}
    answer = number_reading(cnn, reading, outputs, base_url=BASE, token_key="k")
    assert (answer.text, answer.confidence, answer.model, answer.model_version) == ("72", 0.72, "cnn", "1")
    first, second = answer.digits
    assert (first.digit, first.confidence, first.box, first.probabilities) == (
        7,
        0.9,
        [1, 2, 3, 4],
        digits[0].probabilities,
    )
    assert (first.is_digit, first.digit_score) == (True, pytest.approx(0.9))  # row 2's score
    assert (second.digit, second.confidence, second.box) == (2, 0.8, [5, 6, 7, 8])
    assert (second.is_digit, second.digit_score) == (False, pytest.approx(0.1))  # row 0's
    assert first.activations_url.startswith(f"{BASE}activations?input=")
    assert first.activations_url.endswith("&model=cnn")
    assert np.array_equal(decode_token(token_of(first.activations_url), "k"), pixels[0])
    assert np.array_equal(decode_token(token_of(second.activations_url), "k"), pixels[1])
    assert [(i.box, i.reason) for i in answer.ignored] == [([9, 9, 2, 2], "dot")]


def test_an_explanation_of_a_token_defaults_to_the_predicted_digit_and_the_models_method(
    dataplane: DataPlane, mnist_sample: Mnist
) -> None:
    digit = mnist_sample.test.images[0]
    token = token_of(run(dataplane.classify(encode(digit), model="softmax", base_url=BASE)).activations_url)
    options = Options(steps=8)
    answer = run(
        dataplane.explain(
            token, model="softmax", method=None, target=None, options=options, base_url=BASE, encoding="json"
        )
    )
    assert answer.prediction.digit == answer.target == mnist_sample.test.labels[0]
    assert answer.prediction.model == "softmax"
    assert answer.prediction.activations_url.startswith(f"{BASE}activations?input={token}")
    assert answer.method == "exact"  # the linear model's default
    assert answer.methods == ["exact", "integrated_gradients", "occlusion"]
    assert answer.input == digit.tolist()
    attribution = np.asarray(answer.attribution)
    assert attribution.shape == (28, 28)
    assert (answer.min, answer.max) == (
        pytest.approx(attribution.min(), abs=1e-4),
        pytest.approx(attribution.max(), abs=1e-4),
    )
    assert answer.encoding == "json"
    assert answer.baseline
    assert answer.settings == {}
    exact = run(
        dataplane.explain(
            token, model="softmax", method="exact", target=3, options=options, base_url=BASE, encoding="json"
        )
    )  # offered by softmax, not by the default model
    assert (exact.method, exact.target) == ("exact", 3)


def test_an_explanation_of_an_upload_with_a_method_a_target_and_settings(
    dataplane: DataPlane, mnist_sample: Mnist
) -> None:
    data = encode(mnist_sample.test.images[1])
    options = Options(patch=7, stride=7)
    common = {"model": "cnn", "method": "occlusion", "target": 9, "options": options, "base_url": BASE}
    as_json = run(dataplane.explain(data, encoding="json", **common))
    as_base64 = run(dataplane.explain(data, encoding="base64", **common))
    assert (as_json.method, as_json.target, as_json.settings) == ("occlusion", 9, {"patch": 7, "stride": 7})
    assert as_json.prediction.digit == mnist_sample.test.labels[1]  # the target explained is not the one predicted
    assert isinstance(as_base64.attribution, str)
    assert as_base64.encoding == "base64"
    decoded = np.frombuffer(base64.b64decode(as_base64.attribution), "<f4").reshape(28, 28)
    np.testing.assert_allclose(decoded, np.asarray(as_json.attribution), atol=1e-4)
    assert as_json.completeness_error is None
    assert dataplane._explaining is not None
    assert dataplane._explaining.total_tokens == CONCURRENT_EXPLANATIONS


def test_integrated_gradients_through_the_core_are_complete(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    data = encode(mnist_sample.test.images[2])
    answer = run(
        dataplane.explain(
            data,
            model="lenet",
            method="integrated_gradients",
            target=None,
            options=Options(steps=64),
            base_url=BASE,
            encoding="json",
        )
    )
    assert answer.settings == {"steps": 64}
    assert answer.completeness_error is not None
    assert answer.completeness_error < 0.01


@pytest.mark.parametrize(
    ("method", "target", "options", "error", "message"),
    [
        ("shap", None, Options(), UnknownMethod, "'shap'"),
        ("exact", None, Options(), UnknownMethod, "not offered for model 'cnn'"),
        (None, 10, Options(), BadTarget, "target is 10"),
        (None, -1, Options(), BadTarget, "target is -1"),
        (None, None, Options(steps=0), BadSetting, "steps is 0"),
        (None, None, Options(patch=15), BadSetting, "patch is 15"),
    ],
)
def test_a_bad_explanation_request_is_refused_before_any_image_work(
    dataplane: DataPlane, method: str | None, target: int | None, options: Options, error: type, message: str
) -> None:
    for image in (b"not an image", "not-a-token"):  # refused for the request, not for its image
        with pytest.raises(error, match=message):
            run(dataplane.check_explanation("cnn", method, target, options))
        with pytest.raises(error, match=message):
            run(
                dataplane.explain(
                    image, model="cnn", method=method, target=target, options=options, base_url=BASE, encoding="json"
                )
            )
    run(dataplane.check_explanation("cnn", "occlusion", 0, Options()))  # and a good one passes
    run(dataplane.check_explanation("cnn", None, 9, Options()))
    run(dataplane.check_explanation("softmax", "exact", None, Options()))  # each model's own methods
    with pytest.raises(UnknownMethod, match="not offered for model 'softmax'"):
        run(dataplane.check_explanation("softmax", "gradcam", None, Options()))


def test_explaining_images_refuses_a_method_the_model_does_not_offer(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    images = mnist_sample.test.images[:1].astype(np.float32) / 255
    with pytest.raises(UnknownMethod, match="not offered for model 'cnn'"):
        run(dataplane.explain_images(dataplane.model("cnn"), images, method="exact", targets=None, options=Options()))


def test_the_image_limit_of_the_settings_applies_before_decoding(dataplane: DataPlane) -> None:
    settings = Settings(models_dir=MODELS_DIR, max_image_pixels=100 * 100)
    small = DataPlane(dataplane.registry, settings, dataplane.decode_pool)
    with pytest.raises(ImageTooLarge, match="the limit is 10,000"):
        run(small.decoded(encode(np.zeros((100, 101), np.uint8)), lambda data, limits: pytest.fail("decoded")))


def test_a_plain_mnist_png_never_reaches_the_decoder(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    def decoder(data: bytes, limits: Limits) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr("app.dataplane.preprocess", decoder)
    digit = mnist_sample.test.images[6]
    assert np.array_equal(run(dataplane.prepare(encode(digit))), digit)


class BlockedExplanations:
    """app.explain's explain_images replaced by work that holds its thread until released (or a guard ends it),
    counting how many run at once."""

    def __init__(self, guard_s: float) -> None:
        self.lock, self.active, self.peak = threading.Lock(), 0, 0
        self.release = threading.Event()
        self.guard_s = guard_s

    def __call__(self, **_: object) -> list[str]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.release.wait(self.guard_s)
        with self.lock:
            self.active -= 1
        return ["explained"]


def test_at_most_two_explanations_run_at_once_per_worker(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = BlockedExplanations(guard_s=0.2)  # a third running at once would be seen in the peak at once
    monkeypatch.setattr("app.dataplane.explain_images", work)
    own = DataPlane(dataplane.registry, dataplane.settings, dataplane.decode_pool)
    images = mnist_sample.test.images[:1].astype(np.float32) / 255

    async def three() -> list[list[str]]:
        loaded = own.model("cnn")
        calls = [own.explain_images(loaded, images, method=None, targets=None, options=Options()) for _ in range(3)]
        return list(await asyncio.gather(*calls))

    assert run(three()) == [["explained"]] * 3
    assert work.peak == CONCURRENT_EXPLANATIONS == 2


def test_a_cancelled_explanation_leaves_its_thread_at_once(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = BlockedExplanations(guard_s=5.0)  # only ends a hang, should the cancel wait for the thread
    monkeypatch.setattr("app.dataplane.explain_images", work)
    images = mnist_sample.test.images[:1].astype(np.float32) / 255

    async def cancelled() -> bool:
        loaded = dataplane.model("cnn")
        scope = anyio.CancelScope()  # as a request's deadline cancels its work

        async def explain() -> None:
            with scope:
                await dataplane.explain_images(loaded, images, method=None, targets=None, options=Options())

        async with anyio.create_task_group() as group:
            group.start_soon(explain)
            while work.active == 0:
                await asyncio.sleep(0.001)
            scope.cancel()
        return work.active == 1  # the request is gone; its thread finishes on its own

    try:
        assert run(cancelled())
    finally:
        work.release.set()


class SpyLineReader:
    """line.onnx as it is, recording the shape of every call."""

    def __init__(self, session: object) -> None:
        self.session, self.calls = session, []  # type: ignore[var-annotated]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(feed[LINE_INPUT].shape)
        self.answers = self.session.run(names, feed)  # type: ignore[attr-defined]
        return self.answers  # type: ignore[no-any-return]


def test_the_whole_line_goes_to_the_models_line_reader_in_one_call(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = dataplane.model("cnn")
    spy = SpyLineReader(loaded.line_reader)
    assert spy.session is not None
    monkeypatch.setattr(loaded, "_line_reader", spy)
    indices = [1, 3, 2, 5]
    reading = run(dataplane.read_number(number_of(mnist_sample, indices), model="cnn", base_url=BASE))
    assert reading.text == "".join(str(mnist_sample.test.labels[i]) for i in indices)
    assert len(spy.calls) == 1
    assert spy.calls[0][:2] == (1, 32)
    assert spy.calls[0][2] % 4 == 0
    # The verifier's scores and the line reader's answer both reach the reading: its confidence weighs them.
    weighed = [d.confidence * d.piece_score**PIECE_CONFIDENCE for d in reading.digits if d.piece_score is not None]
    assert len(weighed) == len(indices)
    frames = spy.answers[0][0]
    assert loaded.card is not None
    assert loaded.card.line_reader is not None
    assert loaded.card.line_reader.weighing is not None
    weights = loaded.card.line_reader.weighing.confidence  # the card's, as /read weighs them
    expected = line_confidence(float(np.prod(weighed)), text_log_likelihood(frames, reading.text), weights)
    assert reading.confidence == pytest.approx(expected, rel=1e-5)


class SurePairReader:
    """A stand-in pair.onnx: every run is surely the pair "97"; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        runs = feed[PAIR_INPUT]
        self.calls.append(runs.shape)
        left, right = np.full((len(runs), 10), 0.001, np.float32), np.full((len(runs), 10), 0.001, np.float32)
        left[:, 9], right[:, 7] = 0.991, 0.991
        outputs = {"left": left, "right": right, "pair_score": np.full((len(runs), 1), 0.99, np.float32)}
        return [outputs[name] for name in names]


def test_touching_digits_go_to_the_models_pair_reader_in_one_call(
    dataplane: DataPlane, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, reader = dataplane.model("cnn"), SurePairReader()
    monkeypatch.setattr(loaded, "open_pair_reader", None)
    monkeypatch.setattr(loaded, "_pair_reader", reader)
    monkeypatch.setattr(loaded, "open_line_reader", None)  # the line reader would read the "04" it sees
    monkeypatch.setattr(loaded, "_line_reader", None)
    touching = number_of(mnist_sample, [3, 4], step=16)  # a 0 and a 4 whose ink joins
    reading = run(dataplane.read_number(touching, model="cnn", base_url=BASE))
    assert reading.text == "97"
    assert [d.pair for d in reading.digits] == [True, True]
    assert [d.piece_score for d in reading.digits] == [pytest.approx(0.99)] * 2
    assert len(reader.calls) == 1
    assert reader.calls[0][1:] == (28, 56, 1)
