"""The notebook's figures as PNG files, and the model card rendered as Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure  # no pyplot: files only, never a window or a global figure registry

from app.cards import ModelCard
from training.data import Split


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    return path


def _grid(
    images: npt.NDArray[np.floating], columns: int, titles: list[str] | None = None, cmap: str = "gray"
) -> Figure:
    rows = int(np.ceil(len(images) / columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.2))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap=cmap)
            if titles:
                axis.set_title(titles[index], fontsize=7)
    return figure


def samples_figure(train: Split, path: Path, per_class: int = 7) -> Path:
    """A grid of training samples: one column per class, as the notebook shows them."""
    picks = [np.flatnonzero(train.labels == digit)[:per_class] for digit in range(10)]
    images = np.stack([train.images[picks[digit][row]] for row in range(per_class) for digit in range(10)])
    titles = [str(d) if row == 0 else "" for row in range(per_class) for d in range(10)]
    return _save(_grid(images, 10, titles), path)


def mean_image_figure(train: Split, path: Path) -> Path:
    figure = Figure(figsize=(3, 3))
    axis = figure.subplots()
    axis.imshow(train.images.mean(axis=0), cmap="gray")
    axis.set_title("mean training image")
    axis.axis("off")
    return _save(figure, path)


def weight_templates_figure(weights: npt.NDArray[np.float32], path: Path) -> Path:
    """Each class's weights as a 28x28 template (red: evidence for the class, blue: against)."""
    templates = weights.T.reshape(10, 28, 28)
    return _save(_grid(templates, 5, [str(d) for d in range(10)], cmap="RdBu_r"), path)


def confusion_figure(matrix: list[list[int]], path: Path, title: str) -> Path:
    figure = Figure(figsize=(5, 4.5))
    axis = figure.subplots()
    data = np.asarray(matrix)
    axis.imshow(np.log1p(data), cmap="Blues")
    for (row, col), count in np.ndenumerate(data):
        axis.text(col, row, str(count), ha="center", va="center", fontsize=6)
    axis.set(xlabel="predicted", ylabel="true", title=title, xticks=range(10), yticks=range(10))
    return _save(figure, path)


def misclassified_figure(test: Split, probabilities: npt.NDArray[np.float32], path: Path, count: int = 20) -> Path:
    """The most confidently wrong test images, titled true -> predicted (confidence)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != test.labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    titles = [f"{test.labels[i]}→{predicted[i]} ({probabilities[i, predicted[i]]:.2f})" for i in wrong]
    images = test.images[wrong] if len(wrong) else np.zeros((1, 28, 28))
    return _save(_grid(images, 10, titles or ["none"]), path)


def activation_figure(maps: npt.NDArray[np.float32], path: Path, title: str) -> Path:
    """One layer's maps for one image, (C, H, W), in a grid of 8 columns as in the notebook."""
    figure = _grid(maps, 8, cmap="viridis")
    figure.suptitle(title)
    return _save(figure, path)


def card_markdown(card: ModelCard, figures: list[str]) -> str:
    """A short human-readable rendering of card.json."""
    m = card.metrics
    lines = [
        f"# {card.name} (version {card.version})",
        "",
        card.description,
        "",
        "| fact | value |",
        "| --- | --- |",
        f"| kind | {card.kind} |",
        f"| parameters | {card.parameters:,} |",
        f"| test accuracy | {m.test_accuracy:.2%} on {m.test_images:,} images |",
        f"| validation accuracy | {m.validation_accuracy:.2%} |",
        f"| CPU throughput | {m.images_per_second_per_core:,.0f} images/s per core (batch 64) |",
        f"| training time | {card.training.get('train_seconds', 0):.0f} s |",
        f"| file | {card.file} ({card.file_bytes / 1024:.0f} KiB) |",
        f"| parity (max abs diff) | {max(card.parity.max_abs_diff.values()):.1e} on {card.parity.images} images |",
        "",
        "## Architecture",
        "",
        *(f"- {line}" for line in card.architecture),
        "",
        "## Outputs",
        "",
        *(f"- `{o.name}` {o.shape}" for o in card.outputs if o.name in ("logits", "probabilities")),
        *(f"- activation `{a.name}` {a.shape}: {a.description}" for a in card.activations),
        "",
        "## Per-class recall",
        "",
        "| digit | " + " | ".join(str(d) for d in range(10)) + " |",
        "| --- |" + " --- |" * 10,
        "| recall | " + " | ".join(f"{r:.3f}" for r in m.per_class_recall) + " |",
        "| precision | " + " | ".join(f"{p:.3f}" for p in m.per_class_precision) + " |",
        "",
        "## Figures",
        "",
        *(f"![{Path(f).stem}]({f})" for f in figures),
        "",
    ]
    return "\n".join(lines)
