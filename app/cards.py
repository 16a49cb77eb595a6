"""The `models/` contract: a manifest listing the models, and one card per model beside its ONNX file.

Training writes these with the same classes the service reads them with; nothing here imports ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
CARD_FILE = "card.json"
INPUT_NAME = "image"
INPUT_SHAPE = (-1, 28, 28, 1)
# explain.onnx: inputs `image` and TARGET (N,) int64; outputs the target's logit, its gradient with respect to the
# image, and for a CNN the last convolution's ReLU maps and their gradient (Grad-CAM).
TARGET = "target"
TARGET_LOGIT = "target_logit"
INPUT_GRADIENT = "input_gradient"
GRADCAM_MAPS = "gradcam_maps"
GRADCAM_GRADIENT = "gradcam_gradient"
# pair.onnx: input PAIR_INPUT (N, 28, 56, 1) in [0, 1]; outputs PAIR_LEFT and PAIR_RIGHT (N, 10), each digit's
# probabilities, and PAIR_SCORE (N, 1), the probability that the run is two whole digits.
PAIR_INPUT = "pair"
PAIR_LEFT, PAIR_RIGHT, PAIR_SCORE = "left", "right", "pair_score"
# line.onnx: input LINE_INPUT (N, 32, W, 1) in [0, 1], W a multiple of 4; output LINE_OUTPUT (N, W / 4, 11), the
# log-probabilities of each digit and of the CTC blank (the last) at every 4th column.
LINE_INPUT = "line"
LINE_OUTPUT = "frames"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """One input or output tensor of the ONNX graph."""

    name: str
    datatype: Literal["FP32"] = "FP32"
    shape: list[int] = Field(description="-1 marks the batch dimension")


class ActivationLayer(_Frozen):
    """An extra output holding one layer's maps for each image, channel-major."""

    name: str
    shape: list[int] = Field(description="[channels, height, width] for one image")
    description: str


class Metrics(_Frozen):
    """Measured by onnxruntime on the exported file, on the full MNIST test set."""

    test_accuracy: float
    test_images: int
    validation_accuracy: float
    per_class_precision: list[float]
    per_class_recall: list[float]
    confusion_matrix: list[list[int]] = Field(description="rows: true digit, columns: predicted digit")
    images_per_second_per_core: float = Field(description="onnxruntime CPU, batch 64, one thread")


class Parity(_Frozen):
    """Largest absolute difference between the ONNX file and the trained model, per output."""

    images: int
    tolerance: float
    max_abs_diff: dict[str, float]


class CalibrationMetrics(_Frozen):
    """How far `probabilities` are from the frequencies they claim, on the full MNIST test set."""

    ece: float = Field(description="expected calibration error: |accuracy - confidence| over 15 equal-width bins")
    nll: float = Field(description="mean negative log-likelihood of the true digit")
    brier: float = Field(description="mean squared distance between the probabilities and the one-hot truth")
    mean_confidence: float
    accuracy: float


class Calibration(_Frozen):
    """Folded into the graph: probabilities = (1 - floor) * softmax(logits / temperature) + floor / 10."""

    method: Literal["temperature", "temperature_and_floor"] = "temperature"
    temperature: float
    floor: float = Field(0.0, description="share of probability spread evenly over the 10 digits; 0 for most models")
    fitted_on: str
    before: CalibrationMetrics
    after: CalibrationMetrics


class DetectorRates(_Frozen):
    """How the detector's threshold splits a set of digits and a set of non-digits."""

    digits: int
    digits_flagged: float = Field(description="share of the digits called not a digit")
    non_digits: int
    non_digits_caught: float = Field(description="share of the non-digits called not a digit")
    caught_per_family: dict[str, float]


class Detector(_Frozen):
    """The `digit_score` output: is the image a handwritten digit at all? Below `threshold`: not a digit."""

    output: str = "digit_score"
    threshold: float
    features: str
    head: str
    training: dict[str, Any]
    validation: DetectorRates = Field(description="the MNIST validation split and generated non-digits")
    test: DetectorRates = Field(description="the MNIST test set and the separate non-digit evaluation set")


class PieceRates(_Frozen):
    """How the piece verifier's 0.5 line splits the pieces /read's segmenter cuts from lines of validation digits."""

    digits: int
    digits_accepted: float = Field(description="share of the pieces that are one whole digit scoring at least 0.5")
    others: int
    others_caught: float = Field(description="share of the other pieces (fragments, touching pairs) scoring below 0.5")


class PieceVerifier(_Frozen):
    """The `piece_score` output, for /read only: is a piece cut from a written line one whole digit, not a fragment
    or two touching digits the classifier is as sure of? /read adds a weighed log of it to each piece's evidence;
    /predict ignores it (the not-a-digit `detector` answers there). It has no threshold."""

    output: str = "piece_score"
    network: str
    training: dict[str, Any]
    validation: PieceRates = Field(description="pieces cut from lines of the MNIST validation split's digits")


class CompanionFile(_Frozen):
    """A graph of its own beside model.onnx (explain.onnx, pair.onnx, line.onnx): the service opens it only when
    its bytes still hash to what training recorded."""

    file: str
    file_sha256: str
    file_bytes: int


class PairRates(_Frozen):
    """How the pair reader does on the runs /read's segmenter offers it from lines of validation digits."""

    pairs: int
    pairs_read: float = Field(description="share of the runs that are two whole digits whose two digits are read right")
    pairs_kept: float = Field(description="share of those scoring at least 0.5")
    others: int
    others_caught: float = Field(description="share of the other runs (one digit, three, fragments) scoring below 0.5")


class PairReader(CompanionFile):
    """pair.onnx, /read's reader of two touching digits, a network of its own beside model.onnx (ONNX Runtime runs
    every node of a graph, and /predict must not pay for it). /read offers it each run of parts of one touching
    group that may be two digits; a reading may take both digits from it instead of cutting the run in two."""

    file: str = "pair.onnx"
    parameters: int
    network: str
    training: dict[str, Any]
    validation: PairRates = Field(description="runs cut from lines of the MNIST validation split's digits")


class LineRates(_Frozen):
    """How the line reader does on its own, on lines of validation digits."""

    lines: int
    lines_read: float = Field(description="share of the lines whose likeliest text is the number written")


class LineWeighing(_Frozen):
    """How /read weighs the line reader's texts against the reading graph's (app.reading.weigh_line) and how sure it
    is of the text it then reads (app.reading.line_confidence): fitted for this model's networks together by
    training.line_weighing, on numbers of MNIST validation digits."""

    texts: tuple[float, float, float, float, float] = Field(
        description="weights of a candidate text's features, in app.reading.Candidate's order"
    )
    confidence: tuple[float, float, float] = Field(
        description="weights of the logits of the digits' confidence and of the line reader's probability of the "
        "text, and a constant: a logistic regression of whether the text read is right"
    )
    numbers: int = Field(description="numbers the weights were fitted on")
    read_right: float = Field(description="share of those numbers read right with these weights")
    calibration_error: float = Field(description="their confidences' expected calibration error (10 bins)")


class LineReader(CompanionFile):
    """line.onnx, /read's reader of the whole line at once (CTC), a network of its own beside model.onnx. /read
    weighs the texts it finds likely against the reading graph's."""

    file: str = "line.onnx"
    parameters: int
    network: str
    training: dict[str, Any]
    validation: LineRates = Field(description="lines of the MNIST validation split's digits, on generated paper")
    weighing: LineWeighing | None = Field(
        None, description="None until `training weigh-lines` fits it; /read does not use the line reader without it"
    )


class GradientCheck(_Frozen):
    """explain.onnx checked when it was written: its input gradient against central finite differences of
    model.onnx (on digits with a little noise added, so that no ReLU or max-pool sits exactly on a kink), and
    integrated gradients' completeness on the plain digits."""

    images: int
    epsilon: float
    min_correlation: float = Field(description="lowest correlation of gradient and finite differences over the images")
    pixels_off: float = Field(description="share of pixels whose difference exceeds 5% of the largest gradient")
    steps: int = Field(description="integrated gradients' steps for the completeness check")
    max_completeness_error: float = Field(description="largest |sum(attribution) - (f(x) - f(0))| / |f(x) - f(0)|")


class MethodFaithfulness(_Frozen):
    """How faithful one explanation method is for this model (benchmarks/explain_eval.py)."""

    deletion_ratio: float = Field(
        description="mean drop of the target's probability when its 16 most attributed pixels are set to 0, over"
        " the mean drop for 16 random ink pixels"
    )
    deletion_area: float = Field(description="area under the target probability as pixels are deleted in order")
    random_area: float = Field(description="the same area for a random order of the ink pixels")
    randomised_rank_correlation: float = Field(
        description="Spearman correlation of the maps with those of the model with random weights (Adebayo 2018)"
    )
    offered: bool = Field(description="rank correlation below 0.5 (the sanity check) and deletion area below random")
    median_completeness_error: float | None = Field(
        None, description="integrated gradients at the default steps: the median completeness error over the digits"
    )
    complete_within_1_percent: float | None = Field(
        None, description="integrated gradients: the share of the digits whose completeness error is at most 1%"
    )


class Explain(CompanionFile):
    """Attribution maps: the gradient graph beside model.onnx and the methods the service offers."""

    file: str = "explain.onnx"
    methods: list[str] = Field(description="the methods offered, the default first")
    gradcam_layer: str | None = Field(None, description="the convolution whose ReLU maps Grad-CAM weighs")
    gradient_check: GradientCheck
    faithfulness: dict[str, MethodFaithfulness] = Field(default_factory=dict)
    faithfulness_setup: str | None = None


class ModelCard(_Frozen):
    name: str
    version: str
    kind: Literal["linear", "cnn"]
    description: str
    architecture: list[str]
    parameters: int
    file: str = "model.onnx"
    file_sha256: str
    file_bytes: int
    input: TensorSpec
    outputs: list[TensorSpec]
    activations: list[ActivationLayer]
    metrics: Metrics
    parity: Parity
    training: dict[str, Any] = Field(description="configuration, seed, time, history")
    data_checksums: dict[str, str]
    library_versions: dict[str, str]
    created: str
    calibration: Calibration | None = None
    detector: Detector | None = None
    piece_verifier: PieceVerifier | None = None
    pair_reader: PairReader | None = None
    line_reader: LineReader | None = None
    explain: Explain | None = None


class ManifestEntry(_Frozen):
    name: str
    path: str = Field(description="folder of the model, relative to the manifest")


class Manifest(_Frozen):
    default_model: str
    models: list[ManifestEntry]


def read_manifest(models_dir: Path) -> Manifest:
    return Manifest.model_validate_json((models_dir / MANIFEST_FILE).read_text())


def read_card(model_dir: Path) -> ModelCard:
    return ModelCard.model_validate_json((model_dir / CARD_FILE).read_text())


def write_json(path: Path, model: BaseModel) -> None:
    path.write_text(model.model_dump_json(indent=2) + "\n")
