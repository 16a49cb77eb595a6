"""Every kind of bad request, as one exception tree. Each error carries a stable `code` and a message, nothing of any
transport: each front end maps the code to its own status in one table (REST: app.handlers.HTTP_STATUS; V2 gRPC:
app.grpc_v2.GRPC_STATUS). The statuses below are REST's.

ServiceError
├── EmptyBody              400 empty_body
├── MissingFile            400 missing_file
├── TooManyFiles           400 too_many_files
├── MalformedForm          400 malformed_form
├── UnsupportedMediaType   415 unsupported_media_type
├── NotAnImage             415 not_an_image
├── UnsupportedFormat      415 unsupported_format
├── TruncatedImage         400 truncated_image
├── PayloadTooLarge        413 payload_too_large
├── ImageTooLarge          413 image_too_large
├── BlankImage             422 blank_image
├── NoDigits               422 no_digits
├── TooManyDigits          422 too_many_digits
├── UnknownModel           404 unknown_model
├── ModelUnavailable       503 model_unavailable
│   └── ModelRestarting    503 model_unavailable (with Retry-After)
├── Overloaded             503 overloaded (with Retry-After)
├── ModelLoadFailed        400 model_load_failed (the version serving, if any, still serves)
├── DefaultModelRequired   409 default_model_required
├── UnknownLayer           404 unknown_layer
├── NoTemplates            404 no_templates
├── InvalidInferenceRequest  400 invalid_inference_request (an Open Inference Protocol request the model cannot take)
├── UnknownMethod          404 unknown_method
├── BadTarget              422 bad_target
├── BadSetting             422 bad_setting
├── BadToken               400 bad_token
├── Unauthorized           401 unauthorized
├── RequestTimedOut        408 request_timeout
├── HeadersTooLarge        431 headers_too_large
├── Unimplemented          501 unimplemented
└── Timeout                504 timeout
"""

from __future__ import annotations

from collections.abc import Iterable


class ServiceError(Exception):
    code = "bad_request"
    retry_after_s: int | None = None  # set when the same request may succeed later: sent as Retry-After

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyBody(ServiceError):
    code = "empty_body"

    def __init__(self) -> None:
        super().__init__("The request has no image: send it as multipart field 'file' or as an image/* body.")


class MissingFile(ServiceError):
    code = "missing_file"


class TooManyFiles(ServiceError):
    code = "too_many_files"


class MalformedForm(ServiceError):
    code = "malformed_form"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class NotAnImage(ServiceError):
    code = "not_an_image"


class UnsupportedFormat(ServiceError):
    code = "unsupported_format"


class TruncatedImage(ServiceError):
    code = "truncated_image"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class ImageTooLarge(ServiceError):
    code = "image_too_large"


class BlankImage(ServiceError):
    code = "blank_image"

    def __init__(self) -> None:
        super().__init__("The image is blank: no digit stands out from the background. Draw or photograph a digit.")


class NoDigits(ServiceError):
    """/read found ink, or none, but nothing that can be a digit."""

    code = "no_digits"


class TooManyDigits(ServiceError):
    """/read found more separate marks that could be digits than one line of a number holds."""

    code = "too_many_digits"


class UnknownModel(ServiceError):
    code = "unknown_model"

    def __init__(self, name: str, available: Iterable[str]) -> None:
        super().__init__(f"Unknown model {name[:64]!r}; available: {', '.join(available)}.")


class ModelUnavailable(ServiceError):
    code = "model_unavailable"


class Overloaded(ServiceError):
    """Too much work in flight to start this request now; retrying soon succeeds."""

    code = "overloaded"
    retry_after_s = 1


class ModelRestarting(ModelUnavailable):
    """The model process stopped with this request in it; a new one is starting: the request may be sent again."""

    retry_after_s = 1


class ModelLoadFailed(ServiceError):
    """A model's folder did not pass (card, checksum, graph, warm-up): its version serving, if any, still serves.
    400, as Triton answers a failed load."""

    code = "model_load_failed"


class DefaultModelRequired(ServiceError):
    """The default model cannot be unloaded: requests that name no model need it."""

    code = "default_model_required"


class UnknownLayer(ServiceError):
    code = "unknown_layer"


class NoTemplates(ServiceError):
    code = "no_templates"


class InvalidInferenceRequest(ServiceError):
    """An Open Inference Protocol request (V2 REST or gRPC) that does not fit the model: names, types, shapes."""

    code = "invalid_inference_request"


class UnknownMethod(ServiceError):
    """An explanation method the service does not know, or does not offer for this model."""

    code = "unknown_method"


class BadTarget(ServiceError):
    """An explanation's target that is not one of the model's classes."""

    code = "bad_target"


class BadSetting(ServiceError):
    """An explanation method's setting out of its range (steps, patch, stride)."""

    code = "bad_setting"


class BadToken(ServiceError):
    code = "bad_token"


class Unauthorized(ServiceError):
    code = "unauthorized"


class RequestTimedOut(ServiceError):
    """The client was too slow to send its request (MNIST_HEADER_TIMEOUT_S, MNIST_BODY_TIMEOUT_S)."""

    code = "request_timeout"


class HeadersTooLarge(ServiceError):
    code = "headers_too_large"


class Unimplemented(ServiceError):
    """A protocol operation this service does not offer (V2 gRPC: the model repository extension)."""

    code = "unimplemented"


class Timeout(ServiceError):
    code = "timeout"
