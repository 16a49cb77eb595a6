"""POST /read: read a handwritten number written on one line."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.dataplane import activations_url, digit_verdict, wanted_outputs
from app.deps import base_url, dataplane_of, model_query, read_image
from app.preprocess import model_input
from app.reading import Reading, plan_upload, resolve
from app.routes.docs import COMMON_ERRORS, IMAGE_BODY, MODEL_PARAMETER, READ_ERRORS
from app.routes.predict import DirectRoute, json_response
from app.runtime.batcher import Outputs
from app.runtime.registry import LoadedModel
from app.schemas import IgnoredMark, NumberReading, ReadDigit

router = APIRouter(tags=["read"], route_class=DirectRoute, responses=COMMON_ERRORS)


def render(model: LoadedModel, reading: Reading, outputs: Outputs, *, base_url: str, token_key: str) -> NumberReading:
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


@router.post(
    "/read",
    response_model=NumberReading,
    responses=READ_ERRORS,
    openapi_extra={**IMAGE_BODY, "parameters": [MODEL_PARAMETER]},
)
async def read_number(request: Request) -> Response:
    """Read a number handwritten on one line (a postcode, an amount, a year): its digits left to right.

    Same formats, limits and errors as /predict. Specks, dots, dashes and underlines are listed under `ignored`;
    an image with no digit at all is 422 `no_digits`. Boxes are in the uploaded image's pixels.
    """
    dataplane = dataplane_of(request)
    loaded = dataplane.model(model_query(request))
    plan = await dataplane.decoded(await read_image(request), plan_upload)
    # Every candidate piece of every group in one model call; the best reading is chosen from its answers.
    outputs = await loaded.infer(model_input(plan.batch()), [*wanted_outputs(loaded), "logits"])
    reading = resolve(plan, outputs["probabilities"], outputs["logits"])
    token_key = dataplane.settings.token_key
    return json_response(render(loaded, reading, outputs, base_url=base_url(request), token_key=token_key))
