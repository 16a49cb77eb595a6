"""Every kind of bad request, as one exception tree; app.handlers renders them as `{"detail", "code"}`.

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
├── Overloaded             503 overloaded (with Retry-After)
│   └── ModelRestarting    503 model_unavailable (with Retry-After)
├── UnknownLayer           404 unknown_layer
├── NoTemplates            404 no_templates
├── UnknownMethod          404 unknown_method
├── BadTarget              422 bad_target
├── BadSetting             422 bad_setting
├── BadToken               400 bad_token
├── Unauthorized           401 unauthorized
├── RequestTimedOut        408 request_timeout
├── HeadersTooLarge        431 headers_too_large
└── Timeout                504 timeout
"""

from __future__ import annotations

from collections.abc import Iterable


class ServiceError(Exception):
    status_code = 400
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
    status_code = 415
    code = "unsupported_media_type"


class NotAnImage(ServiceError):
    status_code = 415
    code = "not_an_image"


class UnsupportedFormat(ServiceError):
    status_code = 415
    code = "unsupported_format"


class TruncatedImage(ServiceError):
    code = "truncated_image"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class ImageTooLarge(ServiceError):
    status_code = 413
    code = "image_too_large"


class BlankImage(ServiceError):
    status_code = 422
    code = "blank_image"

    def __init__(self) -> None:
        super().__init__("The image is blank: no digit stands out from the background. Draw or photograph a digit.")


class NoDigits(ServiceError):
    """/read found ink, or none, but nothing that can be a digit."""

    status_code = 422
    code = "no_digits"


class TooManyDigits(ServiceError):
    """/read found more separate marks that could be digits than one line of a number holds."""

    status_code = 422
    code = "too_many_digits"


class UnknownModel(ServiceError):
    status_code = 404
    code = "unknown_model"

    def __init__(self, name: str, available: Iterable[str]) -> None:
        super().__init__(f"Unknown model {name[:64]!r}; available: {', '.join(available)}.")


class ModelUnavailable(ServiceError):
    status_code = 503
    code = "model_unavailable"


class Overloaded(ServiceError):
    """Too much work in flight to start this request now; retrying soon succeeds."""

    status_code = 503
    code = "overloaded"
    retry_after_s = 1


class ModelRestarting(ModelUnavailable):
    """The model process stopped with this request in it; a new one is starting: the request may be sent again."""

    retry_after_s = 1


class UnknownLayer(ServiceError):
    status_code = 404
    code = "unknown_layer"


class NoTemplates(ServiceError):
    status_code = 404
    code = "no_templates"


class UnknownMethod(ServiceError):
    """An explanation method the service does not know, or does not offer for this model."""

    status_code = 404
    code = "unknown_method"


class BadTarget(ServiceError):
    """An explanation's target that is not one of the model's classes."""

    status_code = 422
    code = "bad_target"


class BadSetting(ServiceError):
    """An explanation method's setting out of its range (steps, patch, stride)."""

    status_code = 422
    code = "bad_setting"


class BadToken(ServiceError):
    code = "bad_token"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class RequestTimedOut(ServiceError):
    """The client was too slow to send its request (MNIST_HEADER_TIMEOUT_S, MNIST_BODY_TIMEOUT_S)."""

    status_code = 408
    code = "request_timeout"


class HeadersTooLarge(ServiceError):
    status_code = 431
    code = "headers_too_large"


class Timeout(ServiceError):
    status_code = 504
    code = "timeout"
