"""python -m training: train, evaluate and export the MNIST models, or download the data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.config import MODEL_NAMES
from training.data import DATA_DIR_ENV, MIRRORS, Mnist, MnistError, load_mnist

EXAMPLES = f"""examples:
  python -m training download --data-dir data/mnist
  python -m training train --model all --data-dir ../shared/data/mnist
  python -m training train --model cnn --resume          # re-export the last checkpoint
  python -m training calibrate --model all --data-dir ../shared/data/mnist   # no retraining
  python -m training verify-pieces --model cnn --data-dir ../shared/data/mnist   # /read's piece_score
  python -m training read-pairs --model cnn --data-dir ../shared/data/mnist   # /read's pair.onnx
  python -m training read-lines --model cnn --data-dir ../shared/data/mnist   # /read's line.onnx (and weighing)
  python -m training weigh-lines --model cnn --data-dir ../shared/data/mnist  # /read's weighing of line.onnx
  python -m training evaluate --data-dir ../shared/data/mnist
  python -m training export-explain --data-dir ../shared/data/mnist   # explain.onnx for every model
  python -m training nondigits --out build/nondigits        # look at the evaluation non-digits

The data directory defaults to ${DATA_DIR_ENV}, then ./data/mnist."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train models and write them to the models directory")
    _data_options(train)
    train.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="all", help="which model to train")
    train.add_argument("--checkpoints", type=Path, default=Path("build/checkpoints"), help="Keras checkpoints")
    train.add_argument("--resume", action="store_true", help="reuse a CNN checkpoint instead of training again")
    train.add_argument("--epochs", type=int, help="override the CNN epochs (for quick runs)")
    train.add_argument("--iterations", type=int, help="override the linear models' SGD iterations")

    calibrate = commands.add_parser(
        "calibrate",
        help="calibrate the exported models' probabilities and (re)train their not-a-digit detectors, no retraining",
    )
    _data_options(calibrate)
    calibrate.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="all", help="which model to calibrate")

    verify = commands.add_parser(
        "verify-pieces",
        help="(re)train a model's piece verifier for /read (output `piece_score`); detector untouched, no retraining",
    )
    _data_options(verify)
    verify.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="cnn", help="which model (default cnn)")

    pairs = commands.add_parser(
        "read-pairs", help="(re)train a model's pair reader for /read (pair.onnx, touching digits); model untouched"
    )
    _data_options(pairs)
    pairs.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="cnn", help="which model (default cnn)")

    lines = commands.add_parser(
        "read-lines", help="(re)train a model's line reader for /read (line.onnx, the whole number); model untouched"
    )
    _data_options(lines)
    lines.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="cnn", help="which model (default cnn)")

    weigh = commands.add_parser(
        "weigh-lines",
        help="(re)fit how /read weighs a model's line reader against its graph, and its confidence; networks untouched",
    )
    _data_options(weigh)
    weigh.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="cnn", help="which model (default cnn)")

    evaluate = commands.add_parser("evaluate", help="measure the ONNX models in the models directory")
    _data_options(evaluate)
    evaluate.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="all", help="which model to evaluate")
    evaluate.add_argument(
        "--update-cards", action="store_true", help="write the detector's re-measured test rates into the cards"
    )

    explain = commands.add_parser(
        "export-explain", help="write each model's gradient graph (explain.onnx), check it, record it in the card"
    )
    _data_options(explain)
    explain.add_argument("--model", choices=[*MODEL_NAMES, "all"], default="all", help="which model")
    explain.add_argument("--check-images", type=int, default=3, help="test digits checked by finite differences")

    nondigits = commands.add_parser(
        "nondigits", help="write the generated non-digits (the evaluation set, or the training generator's) as PNGs"
    )
    nondigits.add_argument("--out", type=Path, required=True, help="directory to write <family>-<index>.png into")
    nondigits.add_argument("--set", choices=["evaluation", "training"], default="evaluation", help="which generator")
    nondigits.add_argument("--count", type=int, default=2000, help="how many images")

    download = commands.add_parser("download", help="fetch the four MNIST files, checksum-verified")
    download.add_argument("--data-dir", type=Path, default=None, help=f"target directory (default ${DATA_DIR_ENV})")
    download.add_argument("--mirror", action="append", help=f"base URL to try (repeatable; default {MIRRORS})")
    download.add_argument("--retries", type=int, default=3, help="rounds over the mirrors before giving up")
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help=f"MNIST IDX files (default ${DATA_DIR_ENV})")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="where models and cards live")
    parser.add_argument(
        "--no-verify", action="store_true", help="accept files whose checksums differ (a sample, not MNIST)"
    )
    parser.add_argument("--validation-size", type=int, default=5000, help="images held out of the training file")


def _load(args: argparse.Namespace) -> Mnist:
    return load_mnist(args.data_dir, verify=not args.no_verify, validation_size=args.validation_size)


def _names(choice: str) -> list[str]:
    return list(MODEL_NAMES) if choice == "all" else [choice]


def run_train(args: argparse.Namespace) -> int:
    from training.pipeline import train_and_publish

    data = _load(args)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v is not None}
    for name in _names(args.model):
        train_and_publish(
            name,
            data,
            models_dir=args.models_dir,
            checkpoints=args.checkpoints,
            overrides=overrides,
            resume=args.resume,
        )
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from training.pipeline import publish_trust

    data = _load(args)
    for name in _names(args.model):
        publish_trust(args.models_dir / name, data)
    return 0


def run_verify_pieces(args: argparse.Namespace) -> int:
    from training.pipeline import publish_verifier

    data = _load(args)
    for name in _names(args.model):
        publish_verifier(args.models_dir / name, data)
    return 0


def run_read_pairs(args: argparse.Namespace) -> int:
    from training.pair_reader import export_pair_reader

    data = _load(args)
    for name in _names(args.model):
        card = export_pair_reader(args.models_dir / name, data)
        assert card.pair_reader is not None
        rates = card.pair_reader.validation
        print(
            f"{name}: pair reader: validation pairs read {rates.pairs_read:.2%}, kept {rates.pairs_kept:.2%};"
            f" other runs caught {rates.others_caught:.2%}"
        )
    return 0


def run_read_lines(args: argparse.Namespace) -> int:
    from training.line_reader import export_line_reader
    from training.line_weighing import weigh_lines

    data = _load(args)
    for name in _names(args.model):
        card = export_line_reader(args.models_dir / name, data)
        assert card.line_reader is not None
        print(f"{name}: line reader: validation lines read {card.line_reader.validation.lines_read:.2%}")
        weigh_lines(args.models_dir / name, data)  # a new reader's texts weigh differently against the graph's
    return 0


def run_weigh_lines(args: argparse.Namespace) -> int:
    from training.line_weighing import weigh_lines

    data = _load(args)
    for name in _names(args.model):
        weigh_lines(args.models_dir / name, data)  # prints what each fit reads right
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from app.cards import read_card
    from training.evaluate import evaluate
    from training.pipeline import write_remeasured_card
    from training.trust import measure

    data = _load(args)
    print(
        f"{'model':<10}{'test accuracy':>15}{'card says':>12}{'images/s/core':>15}"
        f"{'test ECE':>10}{'digits flagged':>16}{'non-digits caught':>19}"
    )
    for name in _names(args.model):
        card = read_card(args.models_dir / name)
        metrics, _ = evaluate(args.models_dir / name / card.file, data.test, data.validation)
        ece, flagged, caught = measure(args.models_dir / name, data)
        print(
            f"{name:<10}{metrics.test_accuracy:>15.2%}{card.metrics.test_accuracy:>12.2%}"
            f"{metrics.images_per_second_per_core:>15,.0f}{ece:>10.2%}{flagged:>16.2%}{caught:>19.2%}"
        )
        if args.update_cards:
            write_remeasured_card(args.models_dir / name, data)
    return 0


def run_export_explain(args: argparse.Namespace) -> int:
    from training.explain import export_explain

    digits = _load(args).test.images[: args.check_images]
    for name in _names(args.model):
        card = export_explain(args.models_dir / name, digits)
        assert card.explain is not None
        check = card.explain.gradient_check
        print(
            f"{name}: {card.explain.file} {card.explain.file_bytes:,} bytes; gradient vs finite differences: "
            f"correlation >= {check.min_correlation:.4f}, pixels off {check.pixels_off:.2%}; "
            f"IG completeness error <= {check.max_completeness_error:.2%}"
        )
    return 0


def run_nondigits(args: argparse.Namespace) -> int:
    from PIL import Image

    from training import nondigits

    generate = nondigits.evaluation_set if args.set == "evaluation" else nondigits.training_set
    drawers = nondigits.EVALUATION_DRAWERS if args.set == "evaluation" else nondigits.TRAINING_DRAWERS
    images, families = generate(args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(drawers)
    for index, (image, family) in enumerate(zip(images, families, strict=True)):
        Image.fromarray(image).save(args.out / f"{names[family]}-{index:05d}.png")
    print(f"{len(images)} images in {args.out}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from training.data import download, resolve_data_dir

    target = resolve_data_dir(args.data_dir)
    for path in download(target, mirrors=args.mirror or MIRRORS, retries=args.retries):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "train": run_train,
        "calibrate": run_calibrate,
        "verify-pieces": run_verify_pieces,
        "read-pairs": run_read_pairs,
        "read-lines": run_read_lines,
        "weigh-lines": run_weigh_lines,
        "evaluate": run_evaluate,
        "export-explain": run_export_explain,
        "nondigits": run_nondigits,
        "download": run_download,
    }
    try:
        return handlers[args.command](args)
    except MnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
