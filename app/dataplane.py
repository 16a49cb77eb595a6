"""The core every front end calls (REST, V2 REST, V2 gRPC): classify, classify a batch, activations, read a number,
V2 tensor inference; bytes or arrays in, plain results out (the response models of app.schemas: pydantic, no HTTP).

It knows no transport: no Starlette request, no HTTP status, no gRPC context. What a front end knows of its request
(the base URL of the links it returns, say) it passes in; errors are ServiceErrors with a `code`, which each front
end maps to its own status in one table (app.handlers.HTTP_STATUS, app.grpc_v2.GRPC_STATUS).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar
from urllib.parse import quote

import anyio
import anyio.from_thread
import anyio.to_thread
import numpy as np
import numpy.typing as npt
from PIL import Image

from app.admission import DecodePool
from app.errors import NoDigits, ServiceError, UnknownModel
from app.explain import Explanation, Forward, Options, check_target, explain_images, offered_methods, resolve_method
from app.preprocess import Digit, Limits, decoded_pixels, mnist_png_pixels, model_input, open_image, preprocess
from app.reading import LineAnswers, PairAnswers, Plan, Reading, plan_upload, resolve
from app.runtime.batcher import Outputs
from app.runtime.line_reader import read_line
from app.runtime.pair_reader import read_runs
from app.runtime.registry import LoadedModel, Registry
from app.schemas import (
    Activations,
    AttributionMap,
    BatchItem,
    BatchPrediction,
    BatchReading,
    BatchReadingItem,
    ErrorBody,
    IgnoredMark,
    LayerMaps,
    NumberReading,
    Prediction,
    ReadDigit,
)
from app.settings import Settings
from app.tensors import TensorInput, images_of, output_names
from app.tokens import decode_token, encode_token

SERVER_NAME = "mnist-serve"  # the Open Inference Protocol's server metadata, over REST and gRPC
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
T = TypeVar("T")
Encoding = Literal["json", "base64"]
# Preparing an image this small costs less than the hop to a decoding thread; larger ones leave the event loop. Above
# it, photos of paper get cleaned (app.paper: ~4 ms at 128x96), which the event loop must not wait for.
INLINE_PIXELS = 64 * 64
# Explanations run ONNX Runtime in worker threads beside the batcher: at most this many at once per worker, so a burst
# of them queues instead of taking every core from /predict.
CONCURRENT_EXPLANATIONS = 2
DECIMALS = 5  # activation maps as JSON: enough for a heatmap, and it keeps the JSON about half as long
NOT_A_DIGIT = (
    "This does not look like a handwritten digit (digit_score {score:.2f} is below {threshold:.2f}); the digit given is"
    " only the model's best guess. Send one handwritten digit 0-9."
)


@dataclass(frozen=True)
class TensorResult:
    """A V2 inference's answer: the outputs, in the order asked for."""

    model: str
    version: str
    outputs: dict[str, npt.NDArray[np.float32]]


def wanted_outputs(model: LoadedModel) -> list[str]:
    """The probabilities, and the detector's score when the model has one."""
    assert model.card is not None
    return ["probabilities"] if model.card.detector is None else ["probabilities", model.card.detector.output]


def digit_verdict(model: LoadedModel, outputs: Outputs, index: int) -> tuple[bool, float]:
    """(is_digit, digit_score) of one image; a model without a detector calls everything a digit (score 1)."""
    assert model.card is not None
    detector = model.card.detector
    if detector is None:
        return True, 1.0
    score = float(outputs[detector.output][index, 0])
    return score >= detector.threshold, score


def activations_url(base_url: str, model: LoadedModel, digit: Digit, token_key: str) -> str:
    """The URL of the digit's activation maps, the digit itself in its token. Built by hand: url_for walks every
    route, which costs more than the model call on a busy server. The token is URL-safe base64 already."""
    return f"{base_url}activations?input={encode_token(digit, token_key)}&model={quote(model.name)}"


def digit_png(digit: Digit) -> str:
    """The 28x28 digit as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def make_prediction(
    *, model: LoadedModel, digit: Digit, outputs: Outputs, index: int, base_url: str, token_key: str
) -> Prediction:
    """Image `index` of a model call's outputs as a Prediction; its activations_url and explain_url under base_url."""
    assert model.card is not None
    values = outputs["probabilities"][index].tolist()  # Python floats: a numpy call costs more than the list operation
    best = values.index(max(values))
    is_digit, score = digit_verdict(model, outputs, index)
    threshold = model.card.detector.threshold if model.card.detector else 0.0
    activations = activations_url(base_url, model, digit, token_key)
    return Prediction(
        digit=best,
        confidence=values[best],
        probabilities=values,
        is_digit=is_digit,
        digit_score=score,
        detail=None if is_digit else NOT_A_DIGIT.format(score=score, threshold=threshold),
        model=model.name,
        model_version=model.card.version,
        activations_url=activations,
        explain_url=activations.replace("/activations?", "/explain?", 1),  # the same token, no second encoding
    )


def encoded_map(values: npt.NDArray[np.float32], encoding: Encoding) -> list[list[float]] | str:
    """A 2-D map as nested lists, or as base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(values.astype("<f4").tobytes()).decode("ascii")
    rounded: list[list[float]] = np.round(values, DECIMALS).tolist()
    return rounded


def model_forward(model: LoadedModel) -> Forward:
    """The model as app.explain calls it from a worker thread: each call made on the event loop, where the model
    runs (its threads or its model process)."""

    def forward(images: npt.NDArray[np.float32], outputs: Sequence[str]) -> Outputs:
        return anyio.from_thread.run(model.call, images, list(outputs))

    return forward


def layer_maps(name: str, maps: npt.NDArray[np.float32], encoding: Encoding) -> LayerMaps:
    """One layer's (C, H, W) maps, encoded as asked."""
    data: list[list[list[float]]] | str
    if encoding == "base64":
        data = base64.b64encode(maps.astype("<f4").tobytes()).decode("ascii")
    else:
        data = np.round(maps, DECIMALS).tolist()
    return LayerMaps(
        name=name, shape=list(maps.shape), min=float(maps.min()), max=float(maps.max()), encoding=encoding, data=data
    )


async def read_whole(loaded: LoadedModel, plan: Plan) -> tuple[PairAnswers | None, LineAnswers | None]:
    """What /read's own networks answer, off the event loop: the pair reader's answers for the plan's runs that may
    be two touching digits, and the line reader's for the whole line; each None when the model has no such reader
    (or the plan no such run)."""
    return await anyio.to_thread.run_sync(whole_answers, loaded, plan)


def whole_answers(loaded: LoadedModel, plan: Plan) -> tuple[PairAnswers | None, LineAnswers | None]:
    """read_whole's work, in one worker thread: the readers (opened at the first /read) and their calls."""
    pairs, line = loaded.pair_reader, loaded.line_reader
    weighing = loaded.card.line_reader.weighing if loaded.card and loaded.card.line_reader else None
    return (
        None if pairs is None or not plan.pairs else read_runs(pairs, plan.pair_batch()),
        None
        if line is None or weighing is None or plan.line is None
        else LineAnswers(read_line(line, plan.line), weighing),
    )


def file_error(error: ServiceError) -> ErrorBody:
    """The error one file of a batch caused, in the batch's answer beside the other files' results."""
    return ErrorBody(detail=error.detail, code=error.code)


def number_reading(
    model: LoadedModel, reading: Reading, outputs: Outputs, *, base_url: str, token_key: str
) -> NumberReading:
    """A resolved reading as the response: each digit with its verdict and its activations_url under base_url."""
    assert model.card is not None
    digits = []
    for d in reading.digits:
        is_digit, score = digit_verdict(model, outputs, d.row)
        digits.append(
            ReadDigit(
                digit=d.digit,
                confidence=d.confidence,
                is_digit=is_digit,
                digit_score=score,
                box=list(d.box),
                probabilities=d.probabilities,
                piece_score=d.piece_score,
                pair=d.pair,
                activations_url=activations_url(base_url, model, d.pixels, token_key),
            )
        )
    return NumberReading(
        text=reading.text,
        confidence=reading.confidence,
        model=model.name,
        model_version=model.card.version,
        digits=digits,
        ignored=[IgnoredMark(box=list(i.box), reason=i.reason) for i in reading.ignored],  # type: ignore[arg-type]
    )


class DataPlane:
    """Classify, classify a batch, activations and V2 tensor inference, over one registry, within one worker's
    settings and decode budget."""

    def __init__(self, registry: Registry, settings: Settings, decode_pool: DecodePool) -> None:
        self.registry = registry
        self.settings = settings
        self.decode_pool = decode_pool
        self.limits = Limits(max_pixels=settings.max_image_pixels)
        self._explaining: anyio.CapacityLimiter | None = None

    def model(self, name: str | None, version: str | None = None) -> LoadedModel:
        """The named (or default) model, if it serves that version (every bundled model has exactly one)."""
        model = self.registry.get(name)
        assert model.card is not None
        if version and version != model.card.version:
            raise UnknownModel(f"{model.name} version {version}", [f"{model.name} version {model.card.version}"])
        return model

    async def decoded(self, data: bytes, work: Callable[[bytes, Limits], T]) -> T:
        """work(data, limits), which decodes the upload: inline for a small image, else in a decoding thread once the
        decode budget has room for its pixels. The header is read here only to price the work: `work` opens the bytes
        again (a header costs microseconds), so no picture outlives its budget reservation."""
        cost = decoded_pixels(open_image(data, self.limits))
        if cost <= INLINE_PIXELS:
            return work(data, self.limits)
        return await self.decode_pool.run(cost, work, data, self.limits)

    async def prepare(self, data: bytes) -> Digit:
        """The one way an upload becomes an MNIST digit, for every endpoint: a plain MNIST PNG without the decoding
        machinery, anything else decoded within the budget (decoded) and prepared (app.preprocess)."""
        pixels = mnist_png_pixels(data)
        return pixels if pixels is not None else await self.decoded(data, preprocess)

    async def classify(self, data: bytes, *, model: str | None, base_url: str, debug: bool = False) -> Prediction:
        """One uploaded image classified; with debug, the 28x28 the model saw as `input_png`."""
        loaded = self.model(model)
        digit = await self.prepare(data)
        outputs = await loaded.infer(model_input(digit[np.newaxis]), wanted_outputs(loaded))
        token_key = self.settings.token_key
        prediction = make_prediction(
            model=loaded, digit=digit, outputs=outputs, index=0, base_url=base_url, token_key=token_key
        )
        if debug:
            prediction.input_png = digit_png(digit)
        return prediction

    async def _prepare_each(self, uploads: Sequence[bytes]) -> list[Digit | ServiceError]:
        """Each upload prepared as a single one is, in turn: a batch holds one image's pixels at a time."""
        results: list[Digit | ServiceError] = []
        for data in uploads:
            try:
                results.append(await self.prepare(data))
            except ServiceError as exc:
                results.append(exc)
        return results

    async def classify_batch(
        self, uploads: Sequence[tuple[str | None, bytes]], *, model: str | None, base_url: str
    ) -> BatchPrediction:
        """(filename, bytes) uploads classified in one model call; a file that fails gets its own error."""
        loaded = self.model(model)
        digits = await self._prepare_each([data for _, data in uploads])
        good = [d for d in digits if not isinstance(d, ServiceError)]
        outputs = await loaded.infer(model_input(np.stack(good)), wanted_outputs(loaded)) if good else {}
        results, next_good = [], iter(range(len(good)))
        for (filename, _), digit in zip(uploads, digits, strict=True):
            if isinstance(digit, ServiceError):
                results.append(BatchItem(filename=filename, error=file_error(digit)))
                continue
            prediction = make_prediction(
                model=loaded,
                digit=digit,
                outputs=outputs,
                index=next(next_good),
                base_url=base_url,
                token_key=self.settings.token_key,
            )
            results.append(BatchItem(filename=filename, prediction=prediction))
        return BatchPrediction(model=loaded.name, results=results)

    async def activations(
        self, image: bytes | str, *, model: str | None, layers: Sequence[str], encoding: Encoding
    ) -> Activations:
        """The maps the model computes for an upload (bytes) or for the digit in an activations token (str)."""
        loaded = self.model(model)
        names = loaded.check_layers(layers)
        assert loaded.card is not None
        digit = decode_token(image, self.settings.token_key) if isinstance(image, str) else await self.prepare(image)
        outputs = await loaded.infer(model_input(digit[np.newaxis]), names)
        return Activations(
            model=loaded.name,
            model_version=loaded.card.version,
            kind=loaded.card.kind,
            input=digit.tolist(),
            layers=[layer_maps(name, outputs[name][0], encoding) for name in names],
        )

    async def check_explanation(
        self, model: str | None, method: str | None, target: int | None, options: Options
    ) -> None:
        """Refuse a bad method, target or setting before any image work."""
        loaded = self.model(model)
        assert loaded.card is not None
        explainer = await anyio.to_thread.run_sync(lambda: loaded.explainer)  # opened at the first explanation
        resolve_method(offered_methods(loaded.card, explainer), method, loaded.name)
        if target is not None:
            check_target(target)
        options.check()

    async def explain_images(
        self,
        loaded: LoadedModel,
        images: npt.NDArray[np.float32],
        *,
        method: str | None,
        targets: list[int] | None,
        options: Options,
    ) -> list[Explanation]:
        """Attribution maps of (N, 28, 28) images in [0, 1] (app.explain), off the event loop; targets default to
        the predicted digits."""
        assert loaded.card is not None
        explainer = await anyio.to_thread.run_sync(lambda: loaded.explainer)  # opened at the first explanation
        chosen = resolve_method(offered_methods(loaded.card, explainer), method, loaded.name)
        work = partial(
            explain_images,
            card=loaded.card,
            forward=model_forward(loaded),
            explainer=explainer,
            images=images,
            method=chosen,
            targets=targets,
            options=options.check(),
        )
        if self._explaining is None:  # made on the event loop, where it is used
            self._explaining = anyio.CapacityLimiter(CONCURRENT_EXPLANATIONS)
        return await anyio.to_thread.run_sync(work, limiter=self._explaining, abandon_on_cancel=True)

    async def explain(
        self,
        image: bytes | str,
        *,
        model: str | None,
        method: str | None,
        target: int | None,
        options: Options,
        base_url: str,
        encoding: Encoding,
    ) -> AttributionMap:
        """The prediction and the attribution map of an upload (bytes) or of the digit in a prediction's token (str);
        the target defaults to the predicted digit."""
        await self.check_explanation(model, method, target, options)
        loaded = self.model(model)
        assert loaded.card is not None
        digit = decode_token(image, self.settings.token_key) if isinstance(image, str) else await self.prepare(image)
        batch = model_input(digit[np.newaxis])
        outputs = await loaded.infer(batch, wanted_outputs(loaded))
        prediction = make_prediction(
            model=loaded, digit=digit, outputs=outputs, index=0, base_url=base_url, token_key=self.settings.token_key
        )
        targets = [prediction.digit if target is None else target]
        [result] = await self.explain_images(loaded, batch[..., 0], method=method, targets=targets, options=options)
        return AttributionMap(
            prediction=prediction,
            method=result.method,
            target=result.target,
            baseline=result.baseline,
            settings=result.settings,
            completeness_error=result.completeness_error,
            methods=list(offered_methods(loaded.card, loaded.explainer)),
            min=float(result.attribution.min()),
            max=float(result.attribution.max()),
            encoding=encoding,
            attribution=encoded_map(result.attribution, encoding),
            input=digit.tolist(),
        )

    async def read_number(self, data: bytes, *, model: str | None, base_url: str) -> NumberReading:
        """The number written on one line of an upload (app.reading): every candidate piece of every group in one
        model call; the best reading is chosen from its answers."""
        loaded = self.model(model)
        return await self._read(loaded, await self.decoded(data, plan_upload), base_url)

    async def read_numbers(
        self, uploads: Sequence[tuple[str | None, bytes]], *, model: str | None, base_url: str
    ) -> BatchReading:
        """(filename, bytes) uploads, each read as /read reads one, in turn: a batch holds one image's pixels and
        pieces at a time. A file that cannot be read gets its own error; the others are still read."""
        loaded = self.model(model)
        results = []
        for filename, data in uploads:
            try:
                plan = await self.decoded(data, plan_upload)  # the file's errors, as /predict/batch's
            except ServiceError as exc:
                results.append(BatchReadingItem(filename=filename, error=file_error(exc)))
                continue
            try:
                reading = await self._read(loaded, plan, base_url)
            except NoDigits as exc:  # no digit among what the model read; the model's own errors fail the request
                results.append(BatchReadingItem(filename=filename, error=file_error(exc)))
                continue
            results.append(BatchReadingItem(filename=filename, reading=reading))
        return BatchReading(model=loaded.name, results=results)

    async def _read(self, loaded: LoadedModel, plan: Plan, base_url: str) -> NumberReading:
        """The plan's pieces in one model call, and the reading chosen from their answers."""
        verifier = loaded.card.piece_verifier if loaded.card else None
        extra = ["logits", verifier.output] if verifier else ["logits"]
        outputs = await loaded.infer(model_input(plan.batch()), [*wanted_outputs(loaded), *extra])
        scores = outputs[verifier.output] if verifier else None
        pairs, line = await read_whole(loaded, plan)
        reading = resolve(plan, outputs["probabilities"], outputs["logits"], scores, pairs, line)
        return number_reading(loaded, reading, outputs, base_url=base_url, token_key=self.settings.token_key)

    async def infer_tensors(
        self, *, model: str, version: str | None, inputs: Sequence[TensorInput], outputs: Sequence[str] | None
    ) -> TensorResult:
        """An Open Inference Protocol inference: the `image` tensor checked, the outputs asked for (all by default)."""
        loaded = self.model(model, version)
        assert loaded.card is not None
        names = output_names(outputs, [o.name for o in loaded.card.outputs])
        images = images_of(inputs, max_batch=self.settings.max_batch_images)
        arrays = await loaded.infer(images, names)
        return TensorResult(loaded.name, loaded.card.version, {name: arrays[name] for name in names})
