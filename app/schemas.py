"""Request and response bodies of the REST API, as published in OpenAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.cards import ActivationLayer, ModelCard, TensorSpec

PROBABILITIES_EXAMPLE = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]


class ErrorBody(BaseModel):
    """Every 4xx answer: what is wrong and what to do, plus a stable code to branch on."""

    detail: str = Field(examples=["The image is blank: no digit stands out from the background. Draw a digit."])
    code: str = Field(examples=["blank_image"])


class Prediction(BaseModel):
    """The classification of one image."""

    digit: int = Field(ge=0, le=9, description="the most probable digit", examples=[7])
    confidence: float = Field(
        description="probability that `digit` is right, calibrated on held-out MNIST (of the answers given with"
        " confidence 0.9, about 90% are right); meaningful when `is_digit` is true",
        examples=[0.9993],
    )
    probabilities: list[float] = Field(
        description="calibrated probability of each digit 0-9, assuming the image is a digit",
        examples=[PROBABILITIES_EXAMPLE],
    )
    is_digit: bool = Field(
        description="false when the image does not look like a handwritten digit (a letter, a symbol, a drawing, a"
        " photo): `digit` is then only the best guess",
        examples=[True],
    )
    digit_score: float = Field(
        ge=0.0,
        le=1.0,
        description="how much the image looks like a handwritten digit; below the model's threshold"
        " (GET /models/{name}: card.detector.threshold) `is_digit` is false",
        examples=[0.998],
    )
    detail: str | None = Field(None, description="in plain words, why `is_digit` is false; absent otherwise")
    model: str = Field(examples=["cnn"])
    model_version: str = Field(examples=["1"])
    activations_url: str = Field(
        description="GET it for the activation maps of this same preprocessed image, from any replica",
        examples=["http://127.0.0.1:8000/activations?input=AXjaY2AYBaNgFIyCUTAKRsEoGAUDAQAAcAAB...&model=cnn"],
    )
    explain_url: str | None = Field(
        None,
        description="GET it (add &method=, &target=) for an attribution map of this same image: which pixels made it"
        " this digit",
        examples=["http://127.0.0.1:8000/explain?input=AXjaY2AYBaNgFIyCUTAKRsEoGAUDAQAAcAAB...&model=cnn"],
    )
    input_png: str | None = Field(
        None, description="with ?debug=true: the 28x28 image the model saw, as a base64 PNG (white digit on black)"
    )


class BatchItem(BaseModel):
    """The result for one file of a batch: a prediction or the error that file caused."""

    filename: str | None = None
    prediction: Prediction | None = None
    error: ErrorBody | None = None


class BatchPrediction(BaseModel):
    model: str
    results: list[BatchItem] = Field(description="one result per uploaded file, in upload order")


class LayerMaps(BaseModel):
    """The maps of one layer for one image."""

    name: str = Field(examples=["conv1"])
    shape: list[int] = Field(description="[channels, height, width]", examples=[[32, 28, 28]])
    min: float
    max: float
    encoding: Literal["json", "base64"]
    data: list[list[list[float]]] | str = Field(
        description="json: nested lists [channel][row][column]; base64: little-endian float32, channel-major"
    )


class Activations(BaseModel):
    """What the model computes inside for one image."""

    model: str
    model_version: str
    kind: Literal["linear", "cnn"]
    input: list[list[int]] = Field(description="the 28x28 image the model saw, 0-255, white digit on black")
    layers: list[LayerMaps]


class ModelSummary(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str | None = Field(description="the card's version of the model serving")
    revision: str | None = Field(None, description="the first 12 hex digits of the served ONNX file's SHA-256")
    loaded_at: float | None = Field(None, description="when this version started serving (Unix time)")
    kind: Literal["linear", "cnn"] | None
    description: str | None
    default: bool
    status: Literal["ready", "unavailable"]
    error: str | None = Field(None, description="why the model is unavailable")
    providers: list[str] = Field(description="ONNX Runtime execution providers in use")
    input: TensorSpec | None
    outputs: list[TensorSpec]
    activations: list[ActivationLayer]
    parameters: int | None
    test_accuracy: float | None


class ModelDetail(ModelSummary):
    card: ModelCard | None = Field(description="the full model card")


class Health(BaseModel):
    status: Literal["alive", "ready", "degraded", "not_ready", "draining"]
    models: dict[str, str] = Field(default_factory=dict, description="each model's status")


class ReadDigit(BaseModel):
    """One digit of a number read by /read."""

    digit: int = Field(ge=0, le=9, description="the most probable digit", examples=[2])
    confidence: float = Field(description="probability of that digit", examples=[0.998])
    is_digit: bool = Field(description="whether the piece looks like a handwritten digit at all", examples=[True])
    digit_score: float = Field(ge=0, le=1, description="the not-a-digit detector's score (1: a digit)", examples=[0.97])
    box: list[int] = Field(
        description="[x, y, width, height] in the uploaded image's pixels, the image turned upright by its EXIF "
        "orientation, at full size",
        examples=[[14, 22, 41, 63]],
    )
    probabilities: list[float] = Field(description="probability of each digit 0-9", examples=[PROBABILITIES_EXAMPLE])
    piece_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the piece verifier's score that the box holds one whole digit, not a fragment or two touching "
        "digits (models with a piece verifier; null for the others); for a digit read as one of a pair, the pair "
        "reader's score that the two are two whole digits",
        examples=[0.99],
    )
    pair: bool = Field(
        False,
        description="read whole with its touching neighbour by the model's pair reader: digit, confidence and "
        "probabilities are the pair reader's; box, is_digit and activations are those of the piece the best cut "
        "between the two gives it",
        examples=[False],
    )
    activations_url: str = Field(
        description="GET it for the activation maps of this digit as the model saw it",
        examples=["http://127.0.0.1:8000/activations?input=AXjaY2AYBaNgFIyCUTAKRsEoGAUDAQAAcAAB...&model=cnn"],
    )


class IgnoredMark(BaseModel):
    """Ink that is not a digit, left out of the text."""

    box: list[int] = Field(description="[x, y, width, height], as a digit's box", examples=[[120, 80, 6, 6]])
    reason: Literal["speck", "dot", "dash", "underline"] = Field(examples=["dot"])


class NumberReading(BaseModel):
    """A number written on one line, read digit by digit, left to right."""

    text: str = Field(description="the digits left to right", examples=["2026"])
    confidence: float = Field(
        description="probability that the whole text is right: the product of the digits' confidences, each "
        "weighed by its piece_score^0.1 when the model has a piece verifier",
        examples=[0.991],
    )
    model: str = Field(examples=["cnn"])
    model_version: str = Field(examples=["1"])
    digits: list[ReadDigit]
    ignored: list[IgnoredMark] = Field(description="specks, dots, dashes and underlines, left to right")


class BatchReadingItem(BaseModel):
    """The result for one file of /read/batch: its reading or the error that file caused."""

    filename: str | None = None
    reading: NumberReading | None = None
    error: ErrorBody | None = None


class BatchReading(BaseModel):
    model: str
    results: list[BatchReadingItem] = Field(description="one result per uploaded file, in upload order")


class AttributionMap(BaseModel):
    """Why a model gave a class its score: one value per pixel of the 28x28 input it saw."""

    prediction: Prediction
    method: Literal["integrated_gradients", "occlusion", "gradcam", "exact"] = Field(examples=["integrated_gradients"])
    target: int = Field(ge=0, le=9, description="the class explained (default: the predicted digit)", examples=[7])
    explains: Literal["target_logit"] = Field(
        "target_logit", description="the map explains the target's logit (raw score), in logit units"
    )
    baseline: str = Field(description="what the image is compared with", examples=["black"])
    settings: dict[str, int] = Field(description="the method's settings", examples=[{"steps": 32}])
    completeness_error: float | None = Field(
        None,
        description="integrated gradients: |sum(attribution) - (logit(image) - logit(baseline))| divided by the"
        " latter; small means the steps were enough",
    )
    methods: list[str] = Field(description="the methods this model offers, its default first")
    min: float
    max: float
    encoding: Literal["json", "base64"]
    attribution: list[list[float]] | str = Field(
        description="28x28, positive = pushed towards `target`, negative = against; json: [row][column]; base64:"
        " little-endian float32, row-major"
    )
    input: list[list[int]] = Field(description="the 28x28 image the model saw, 0-255, white digit on black")
