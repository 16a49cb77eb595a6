"""The notebook's figures as PNG files, and the model card rendered as Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure  # no pyplot: files only, never a window or a global figure registry

from app.cards import CARD_FILE, Calibration, ModelCard, write_json
from training.data import Split


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    return path


def _grid(
    images: npt.NDArray[np.floating], columns: int, titles: list[str] | None = None, cmap: str = "gray"
) -> Figure:
    """The images tiled in one picture, each scaled to its own range, titles above them. One axis, not one per
    image: matplotlib's subplots made a 64-map grid take 1.3 s to draw, the whole of a sample training run's figures
    16 s of 51."""
    rows = int(np.ceil(len(images) / columns))
    height, width = images.shape[1:3]
    gap, band = 2, (height // 3 if titles else 0)  # the band above each tile holds its title
    cell_h, cell_w = height + gap + band, width + gap
    mosaic = np.full((rows * cell_h, columns * cell_w), np.nan)  # NaN draws as the figure's background
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        low, high = float(image.min()), float(image.max())
        top, left = row * cell_h + band, col * cell_w
        mosaic[top : top + height, left : left + width] = (image - low) / (high - low) if high > low else 0.0
    figure = Figure(figsize=(columns * 1.1, rows * 1.2))
    axis = figure.subplots()
    axis.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    axis.axis("off")
    for index, title in enumerate(titles or []):
        row, col = divmod(index, columns)
        axis.text(col * cell_w + width / 2, row * cell_h + band - 1, title, ha="center", va="bottom", fontsize=7)
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
    figure.axes[0].set_title(title)
    return _save(figure, path)


SCORE_OUTPUTS = ("logits", "probabilities", "piece_score", "digit_score")  # listed under Outputs; activations apart


def _calibration_sentence(c: Calibration) -> str:
    if not c.floor:
        return (
            f"Temperature scaling, T = {c.temperature:.4g} ({c.fitted_on}), folded into the graph:"
            " `probabilities` = softmax(`logits` / T)"
        )
    return (
        f"Temperature scaling with a floor, T = {c.temperature:.4g} and e = {c.floor:g} ({c.fitted_on}), folded into"
        " the graph: `probabilities` = (1 - e) softmax(`logits` / T) + e / 10"
    )


FIGURE_ORDER = ("samples", "mean_image", "weights", "confusion", "misclassified", "reliability", "detector_errors")


def write_card(folder: Path, card: ModelCard) -> None:
    """The model's card.json, and card.md rendered from it with every figure on disk (FIGURE_ORDER, then by name)."""
    write_json(folder / CARD_FILE, card)
    (folder / "card.md").write_text(card_markdown_of(folder, card))


def card_markdown_of(folder: Path, card: ModelCard) -> str:
    figures = sorted((folder / "figures").glob("*.png"), key=_figure_rank)
    return card_markdown(card, [str(f.relative_to(folder)) for f in figures])


def _figure_rank(path: Path) -> tuple[int, str]:
    return (FIGURE_ORDER.index(path.stem) if path.stem in FIGURE_ORDER else len(FIGURE_ORDER), path.stem)


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
        *(f"- `{o.name}` {o.shape}" for o in card.outputs if o.name in SCORE_OUTPUTS),
        *(f"- activation `{a.name}` {a.shape}: {a.description}" for a in card.activations),
        "",
        *_trust_lines(card),
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
    return "\n".join(lines) + (explain_markdown(card) if card.explain else "")


def explain_markdown(card: ModelCard) -> str:
    """The card's explanation section in Markdown: the gradient graph, its check and the faithfulness figures."""
    assert card.explain is not None
    explain, check = card.explain, card.explain.gradient_check
    lines = [
        "\n## Explanations\n",
        f"`{explain.file}` ({explain.file_bytes:,} bytes, sha256 `{explain.file_sha256[:16]}...`): the gradient of the"
        " target logit, built from model.onnx by `python -m training export-explain`.",
        f"Checked on {check.images} test digits: correlation with central finite differences >= "
        f"{check.min_correlation:.4f}, pixels off by > 5% of the largest gradient {check.pixels_off:.2%}; integrated"
        f" gradients' completeness error at {check.steps} steps <= {check.max_completeness_error:.2%}.",
        "",
        f"Methods offered: {', '.join(explain.methods)}"
        + (f" (Grad-CAM layer {explain.gradcam_layer})" if explain.gradcam_layer else "")
        + ".",
    ]
    if explain.faithfulness:
        lines += [
            "",
            "| method | deletion ratio (top 16 / random 16 ink) | deletion area / random | rank correlation, random"
            " weights | offered |",
            "| --- | --- | --- | --- | --- |",
        ]
        for method, f in explain.faithfulness.items():
            lines.append(
                f"| {method} | {f.deletion_ratio:.1f}x | {f.deletion_area:.3f} / {f.random_area:.3f} |"
                f" {f.randomised_rank_correlation:.2f} | {'yes' if f.offered else 'no'} |"
            )
        ig = explain.faithfulness.get("integrated_gradients")
        if ig and ig.median_completeness_error is not None and ig.complete_within_1_percent is not None:
            lines += [
                "",
                f"Integrated gradients' completeness on those digits: median error {ig.median_completeness_error:.2%},"
                f" within 1% on {ig.complete_within_1_percent:.0%} of them.",
            ]
        lines += ["", f"Setup: {explain.faithfulness_setup}"]
    return "\n".join(lines) + "\n"


def reliability_figure(
    before: npt.NDArray[np.floating], after: npt.NDArray[np.floating], labels: npt.NDArray[np.integer], path: Path
) -> Path:
    """Accuracy against confidence in 15 equal-width bins, before and after calibration (the diagonal is perfect)."""
    figure = Figure(figsize=(4.5, 4))
    axis = figure.subplots()
    edges = np.linspace(0, 1, 16)
    for probabilities, label, marker in ((before, "before", "o"), (after, "after", "s")):
        confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
        bins = np.minimum((confidence * 15).astype(int), 14)
        used = [b for b in range(15) if (bins == b).any()]
        points = [(confidence[bins == b].mean(), correct[bins == b].mean()) for b in used]
        axis.plot(*zip(*points, strict=True), marker=marker, label=label)
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect")
    axis.set(xlabel="confidence", ylabel="accuracy", title="reliability on the test set", xticks=edges[::3])
    axis.legend()
    return _save(figure, path)


def detector_errors_figure(
    digits: npt.NDArray[np.uint8],
    digit_scores: npt.NDArray[np.float32],
    others: npt.NDArray[np.uint8],
    other_scores: npt.NDArray[np.float32],
    path: Path,
) -> Path:
    """The detector's hardest cases: test digits with the lowest digit_score (first rows), then evaluation
    non-digits with the highest."""
    images = np.concatenate([digits, others])
    titles = [f"digit {s:.2f}" for s in digit_scores] + [f"other {s:.2f}" for s in other_scores]
    return _save(_grid(images, 10, titles), path)


def _trust_lines(card: ModelCard) -> list[str]:
    """The calibration and not-a-digit sections, when the card has them."""
    lines: list[str] = []
    if card.calibration:
        c = card.calibration
        lines += [
            "## Calibration",
            "",
            _calibration_sentence(c) + ": every answer keeps its digit. Measured on the 10,000 test images:",
            "",
            "| | ECE (15 bins) | NLL | Brier | mean confidence | accuracy |",
            "| --- | --- | --- | --- | --- | --- |",
            *(
                f"| {when} | {m.ece:.2%} | {m.nll:.4f} | {m.brier:.4f} | {m.mean_confidence:.2%} | {m.accuracy:.2%} |"
                for when, m in (("before", c.before), ("after", c.after))
            ),
            "",
        ]
    if card.detector:
        d = card.detector
        lines += [
            "## Not a digit",
            "",
            f"Output `{d.output}` in [0, 1]; below {d.threshold:.4g} the service answers `is_digit: false`."
            f" Features: {d.features}. Head: {d.head}.",
            "",
            "| set | digits flagged | non-digits caught |",
            "| --- | --- | --- |",
            f"| validation: {d.validation.digits:,} digits, {d.validation.non_digits:,} generated non-digits"
            f" | {d.validation.digits_flagged:.2%} | {d.validation.non_digits_caught:.2%} |",
            f"| test: {d.test.digits:,} MNIST test digits, {d.test.non_digits:,} evaluation non-digits"
            f" | {d.test.digits_flagged:.2%} | {d.test.non_digits_caught:.2%} |",
            "",
            "Evaluation non-digits caught per family: "
            + ", ".join(f"{k} {v:.1%}" for k, v in d.test.caught_per_family.items()),
            "",
        ]
    if card.piece_verifier:
        v, t = card.piece_verifier, card.piece_verifier.training
        lines += [
            "## Piece verifier (/read)",
            "",
            f"Output `{v.output}` in [0, 1]: is a piece /read cut from a line one whole digit, not a fragment or two"
            " touching digits? /read adds a weighed log of it to the piece's evidence; /predict does not use it, and"
            f" it has no threshold. Network: {v.network}. Trained on {t['pieces']:,} pieces ({t['whole_digits']:,}"
            f" whole digits) that /read's segmenter cut from {t['lines']:,} written lines of MNIST training digits.",
            "",
            "| validation pieces (cut from lines of MNIST validation digits) | pieces | on the right side of 0.5 |",
            "| --- | --- | --- |",
            f"| one whole digit | {v.validation.digits:,} | {v.validation.digits_accepted:.2%} |",
            f"| fragments, touching pairs, a digit with much of another | {v.validation.others:,}"
            f" | {v.validation.others_caught:.2%} |",
            "",
        ]
    if card.pair_reader:
        p, t, v = card.pair_reader, card.pair_reader.training, card.pair_reader.validation
        lines += [
            "## Pair reader (/read)",
            "",
            f"`{p.file}` ({p.file_bytes:,} bytes, {p.parameters:,} parameters, sha256 `{p.file_sha256[:16]}...`), a"
            " network of its own beside the model: /read offers it each run of parts of a touching group that may be"
            " two digits, and a reading may take both digits from it instead of cutting the run apart. Network:"
            f" {p.network}. Trained on {t['runs']:,} runs ({t['pairs']:,} of them two whole digits) that /read's"
            f" segmenter cut from {t['lines']:,} written lines of MNIST training digits.",
            "",
            "| validation runs (from lines of MNIST validation digits) | runs | read right | right side of 0.5 |",
            "| --- | --- | --- | --- |",
            f"| two whole digits | {v.pairs:,} | {v.pairs_read:.2%} | {v.pairs_kept:.2%} |",
            f"| one digit, three, a digit and a fragment | {v.others:,} | | {v.others_caught:.2%} |",
            "",
        ]
    if card.line_reader:
        r, t = card.line_reader, card.line_reader.training
        lines += [
            "## Line reader (/read)",
            "",
            f"`{r.file}` ({r.file_bytes:,} bytes, {r.parameters:,} parameters, sha256 `{r.file_sha256[:16]}...`), a"
            " network of its own beside the model that reads the whole number uncut (CTC): /read weighs the texts it"
            f" finds likely against the reading graph's. Network: {r.network}. Trained on {t['lines']:,} written"
            f" lines of 1-8 MNIST training digits on generated paper, {t['epochs']} epochs. Lines of MNIST validation"
            f" digits written the same way read right on their own: {r.validation.lines_read:.2%} of"
            f" {r.validation.lines:,}.",
            "",
        ]
    return lines
