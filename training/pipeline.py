"""One model from data to `models/<name>/`: train, export, check parity, evaluate, draw, write the card."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from app.cards import (
    CARD_FILE,
    INPUT_NAME,
    INPUT_SHAPE,
    MANIFEST_FILE,
    ActivationLayer,
    LineReader,
    Manifest,
    ManifestEntry,
    ModelCard,
    PairReader,
    TensorSpec,
    read_card,
    write_json,
)
from training import export, report, trust, verifier
from training.config import DEFAULTS, MODEL_NAMES, NOTEBOOK_SVM, CnnConfig, LinearConfig
from training.data import Mnist
from training.evaluate import evaluate
from training.line_weighing import weigh_lines
from training.linear import LinearModel, train_linear

VERSION = "1"
DEFAULT_MODEL = "cnn"
PARITY_IMAGES = 1000
DESCRIPTIONS = {
    "svm": "The notebook's multiclass linear SVM (hinge loss, L2), trained by minibatch SGD in NumPy.",
    "softmax": "The notebook's softmax regression, trained by minibatch SGD in NumPy.",
    "lenet": "The notebook's LeNet-style CNN: two 5x5 convolutions, max pooling, a 512-unit dense layer.",
    "cnn": "The default: a compact CNN (four convolutions with batch norm, global pooling) trained with small"
    " shifts, rotations and zoom.",
}


@dataclasses.dataclass
class Trained:
    """What a training stage hands to export: the ONNX graph, its reference function and card facts."""

    proto: onnx.ModelProto
    reference: Callable[..., export.Outputs]
    activations: list[ActivationLayer]
    architecture: list[str]
    parameters: int
    training: dict[str, Any]
    figures: Callable[[Path], list[Path]] = lambda _: []


def train_linear_stage(name: str, config: LinearConfig, data: Mnist, log: Callable[[str], None]) -> Trained:
    model = train_linear(config, data.train.images, data.train.labels, log=log)
    training: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "train_seconds": model.train_seconds,
        "loss_per_epoch": model.history,
    }
    if name == "svm":
        notebook = train_linear(NOTEBOOK_SVM, data.train.images, data.train.labels)
        accuracy = float((notebook.predict(data.test.images) == data.test.labels).mean())
        log(f"svm with the notebook's original settings: {accuracy:.2%} test accuracy")
        training["notebook_settings"] = {"config": dataclasses.asdict(NOTEBOOK_SVM), "test_accuracy": accuracy}
    return Trained(
        proto=export.linear_to_onnx(model, name),
        reference=lambda images: export.linear_reference(model, images),
        activations=[
            ActivationLayer(
                name=export.EVIDENCE,
                shape=[10, 28, 28],
                description="per-class evidence: each class's weights times the centred input",
            )
        ],
        architecture=[
            f"input 28x28 scaled by {config.pixel_scale / 255:g}, minus the training mean image",
            f"linear 784 -> 10 ({config.loss} loss)",
        ],
        parameters=int(model.weights.size + model.bias.size),
        training=training,
        figures=lambda folder: _linear_figures(model, data, folder),
    )


def _linear_figures(model: LinearModel, data: Mnist, folder: Path) -> list[Path]:
    return [
        report.samples_figure(data.train, folder / "samples.png"),
        report.mean_image_figure(data.train, folder / "mean_image.png"),
        report.weight_templates_figure(model.weights, folder / "weights.png"),
    ]


def train_cnn_stage(
    name: str, config: CnnConfig, data: Mnist, checkpoints: Path, *, resume: bool, log: Callable[[str], None]
) -> Trained:
    import keras

    from training import cnn

    checkpoint, info_file = checkpoints / f"{name}.keras", checkpoints / f"{name}.json"
    if resume and checkpoint.is_file() and info_file.is_file():
        log(f"{name}: resuming from {checkpoint}")
        model, info = keras.models.load_model(checkpoint), json.loads(info_file.read_text())
    else:
        train, validation = (data.train.images, data.train.labels), (data.validation.images, data.validation.labels)
        model, info = cnn.train_cnn(config, train, validation, log=log)
        checkpoints.mkdir(parents=True, exist_ok=True)
        model.save(checkpoint)
        info = {"config": dataclasses.asdict(config), **info}
        info_file.write_text(json.dumps(info, indent=1))
    layers = cnn.activation_layer_names(model)
    proto, reference = export.keras_to_onnx(model, layers)
    return Trained(
        proto=proto,
        reference=reference,
        activations=[_activation_layer(model, layer) for layer in layers],
        architecture=[f"{layer.name}: {type(layer).__name__} -> {layer.output.shape[1:]}" for layer in model.layers],
        parameters=int(model.count_params()),
        training=info,
    )


def _activation_layer(model: Any, name: str) -> ActivationLayer:
    conv = next(layer for layer in model.layers if layer.name in (name, f"{name}_conv"))
    height, width, channels = model.get_layer(name).output.shape[1:]
    size = "x".join(str(k) for k in conv.kernel_size)
    return ActivationLayer(
        name=name,
        shape=[channels, height, width],
        description=f"ReLU output of a {size} convolution with {channels} filters",
    )


def publish(name: str, trained: Trained, data: Mnist, models_dir: Path) -> ModelCard:
    """Export, check and evaluate the trained model, then write its folder under models_dir."""
    folder = models_dir / name
    path = folder / "model.onnx"
    export.save(trained.proto, path)
    test_x = (data.test.images[:PARITY_IMAGES].astype(np.float32) / 255.0)[..., np.newaxis]
    parity = export.check_parity(path, trained.reference, test_x)
    metrics, probabilities = evaluate(path, data.test, data.validation)
    figures = [
        *trained.figures(folder / "figures"),
        report.confusion_figure(metrics.confusion_matrix, folder / "figures" / "confusion.png", name),
        report.misclassified_figure(data.test, probabilities, folder / "figures" / "misclassified.png"),
        *_activation_figures(path, trained.activations, test_x[:1], folder / "figures"),
    ]
    content = path.read_bytes()
    card = ModelCard(
        name=name,
        version=VERSION,
        kind="linear" if export.EVIDENCE in {a.name for a in trained.activations} else "cnn",
        description=DESCRIPTIONS.get(name, name),
        architecture=trained.architecture,
        parameters=trained.parameters,
        file_sha256=hashlib.sha256(content).hexdigest(),
        file_bytes=len(content),
        input=TensorSpec(name=INPUT_NAME, shape=list(INPUT_SHAPE)),
        outputs=[TensorSpec(name=n, shape=[-1, 10]) for n in ("logits", "probabilities")]
        + [TensorSpec(name=a.name, shape=[-1, *a.shape]) for a in trained.activations],
        activations=trained.activations,
        metrics=metrics,
        parity=parity,
        training=trained.training,
        data_checksums=data.checksums,
        library_versions=library_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        **kept_readers(folder),
    )
    write_json(folder / CARD_FILE, card)
    relative = [str(f.relative_to(folder)) for f in figures]
    (folder / "card.md").write_text(report.card_markdown(card, relative))
    update_manifest(models_dir, name)
    return card


def kept_readers(folder: Path) -> dict[str, PairReader | LineReader]:
    """The folder's pair and line readers (card field -> section), each while its file is the one its card names:
    they read the ink, not the model's outputs, so a retrained model keeps them (and train_and_publish weighs the
    line reader against the new model's graph again)."""
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    previous = ModelCard.model_validate_json(path.read_text())
    kept: dict[str, PairReader | LineReader] = {}
    for name, section in (("pair_reader", previous.pair_reader), ("line_reader", previous.line_reader)):
        if section is not None and _matches(folder / section.file, section.file_sha256):
            kept[name] = section
    return kept


def _matches(path: Path, sha256: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def rewrite_model(folder: Path, card: ModelCard, proto: onnx.ModelProto) -> ModelCard:
    """The graph saved over the model's file, and its card (hashed anew) as card.json and card.md."""
    path = folder / card.file
    export.save(proto, path)
    content = path.read_bytes()
    card = card.model_copy(update={"file_sha256": hashlib.sha256(content).hexdigest(), "file_bytes": len(content)})
    report.write_card(folder, card)
    return card


def publish_trust(folder: Path, data: Mnist, log: Callable[[str], None] = print) -> ModelCard:
    """Calibrate the exported model in folder and add its not-a-digit detector: graph, card and figures rewritten."""
    card = read_card(folder)
    path = folder / card.file
    result = trust.make_trusted(card, onnx.load(str(path)), data, log=log)
    report.reliability_figure(
        result.uncalibrated, result.test_probabilities, data.test.labels, folder / "figures" / "reliability.png"
    )
    report.detector_errors_figure(
        result.worst_digits, result.worst_scores[0], result.worst_others, result.worst_scores[1],
        folder / "figures" / "detector_errors.png",
    )  # fmt: skip
    card = rewrite_model(folder, result.card, result.proto)
    assert card.calibration is not None
    assert card.detector is not None
    calibration = card.calibration
    log(
        f"{card.name}: T = {calibration.temperature:.3f}, floor {calibration.floor:g},"
        f" test ECE {calibration.before.ece:.2%} -> {calibration.after.ece:.2%};"
        f" test digits flagged {card.detector.test.digits_flagged:.2%},"
        f" evaluation non-digits caught {card.detector.test.non_digits_caught:.2%}"
    )
    return card


def write_remeasured_card(folder: Path, data: Mnist) -> ModelCard:
    """The card (card.json and card.md) with its detector's test rates measured again on the committed graph."""
    card = read_card(folder)
    card = trust.remeasured(card, onnx.load(str(folder / card.file)), data)
    report.write_card(folder, card)
    return card


VERIFIED_MODELS = ("cnn",)  # the models /read is meant to use; a piece verifier costs the others a head for nothing


def publish_verifier(folder: Path, data: Mnist, log: Callable[[str], None] = print) -> ModelCard:
    """Add (or replace) the exported model's piece verifier for /read: graph, card and card.md rewritten, the
    detector and everything else in the graph left as they are."""
    card = read_card(folder)
    path = folder / card.file
    result = verifier.make_verified(card, onnx.load(str(path)), data, log=log)
    card = rewrite_model(folder, result.card, result.proto)
    assert card.piece_verifier is not None
    rates = card.piece_verifier.validation
    log(
        f"{card.name}: piece verifier: validation whole digits accepted {rates.digits_accepted:.2%},"
        f" other pieces caught {rates.others_caught:.2%}"
    )
    return card


def _activation_figures(path: Path, layers: list[ActivationLayer], image: Any, folder: Path) -> list[Path]:
    outputs = export.onnx_outputs(path, image)
    return [
        report.activation_figure(outputs[layer.name][0], folder / f"activations_{layer.name}.png", layer.name)
        for layer in layers
    ]


def update_manifest(models_dir: Path, name: str) -> Manifest:
    """Add name to models_dir's manifest (created if absent), keeping the canonical order."""
    path = models_dir / MANIFEST_FILE
    names = {e.name for e in Manifest.model_validate_json(path.read_text()).models} if path.is_file() else set()
    names.add(name)
    ordered = [n for n in MODEL_NAMES if n in names] + sorted(names - set(MODEL_NAMES))
    default = DEFAULT_MODEL if DEFAULT_MODEL in names else ordered[0]
    manifest = Manifest(default_model=default, models=[ManifestEntry(name=n, path=n) for n in ordered])
    write_json(path, manifest)
    return manifest


def library_versions() -> dict[str, str]:
    packages = ("numpy", "onnx", "onnxruntime", "tensorflow-cpu", "keras", "tf2onnx")
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def train_and_publish(
    name: str,
    data: Mnist,
    *,
    models_dir: Path,
    checkpoints: Path,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """Train one model (or resume its checkpoint) and publish it; overrides that the config lacks are ignored."""
    base = DEFAULTS[name]
    known = {field.name for field in dataclasses.fields(base)}
    config = dataclasses.replace(base, **{k: v for k, v in (overrides or {}).items() if k in known})
    if isinstance(config, LinearConfig):
        trained = train_linear_stage(name, config, data, log)
    else:
        trained = train_cnn_stage(name, config, data, checkpoints, resume=resume, log=log)
    publish(name, trained, data, models_dir)
    card = publish_trust(models_dir / name, data, log=log)
    if name in VERIFIED_MODELS:
        card = publish_verifier(models_dir / name, data, log=log)
    if card.line_reader is not None:  # kept, but its weighing was fitted against the previous model's answers
        card = weigh_lines(models_dir / name, data, log=log)
    log(f"{name}: test accuracy {card.metrics.test_accuracy:.2%}, parity {max(card.parity.max_abs_diff.values()):.1e}")
    return card
