"""Turn any uploaded digit image into what MNIST is made of: a 28x28 uint8 white-on-black digit.

The chain, as MNIST was built: decode -> grayscale -> polarity (white ink on black) -> crop to the ink ->
scale the longest side to 20 px keeping the aspect ratio -> place in 28x28 with the centre of mass in the middle.
Every step is a pure function; errors are the service's own exception types, never HTTP ones.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyspng
from PIL import Image, ImageFile, ImageFilter, UnidentifiedImageError

from app.errors import (
    BlankImage,
    EmptyBody,
    ImageTooLarge,
    NotAnImage,
    ServiceError,
    TruncatedImage,
    UnsupportedFormat,
)
from app.paper import paper_ink

Gray = npt.NDArray[np.float32]  # (H, W) in [0, 1]
Digit = npt.NDArray[np.uint8]  # (28, 28), white digit on black
Pair = npt.NDArray[np.uint8]  # (28, 56), two touching digits, white on black

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF"})
SUPPORTED_TEXT = "PNG, JPEG, BMP, GIF, WebP or TIFF"
MIN_CONTRAST = 0.1  # ink must differ from the background by 10% of the full range
NOISE_FLOOR = 0.2  # after stretching, fainter pixels are paper texture or JPEG noise, not ink
BOX, FIELD, CENTRE = 20, 28, 14.0  # MNIST: digit fits 20x20, field 28x28, centre of mass at pixel (14, 14)
STROKE_AT_BOX = 2.5  # typical MNIST stroke width in pixels, at the 20-pixel scale
WORK_SIZE = 100  # resolution at which strokes are measured and thickened
PAIR_WIDTH = 52  # two touching digits fit 20 px high and at most this wide, in a 28x56 field

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off file is an error, not a grey band

# Row, column and 1 for each pixel of a 28x28 field: flat pixels @ this = (row moment, column moment, mass).
_FIELD_MOMENTS = np.stack([*np.indices((FIELD, FIELD)).reshape(2, -1), np.ones(FIELD * FIELD)], axis=1)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The header chunk of a 28x28 PNG of 8-bit grey pixels, not interlaced: type, width, height, bit depth, colour type,
# compression, filter, interlace.
_MNIST_IHDR = struct.pack(">4sIIBBBBB", b"IHDR", FIELD, FIELD, 8, 0, 0, 0, 0)
_PIXEL_CHUNKS = (b"IHDR", b"IDAT", b"IEND")


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 40_000_000


# Decoded images are reduced to this longest side before anything else: the chain ends at 20x20 pixels, and a digit
# that fills a tenth of the picture still spans ~100 (WORK_SIZE). A 6000x6000 JPEG then decodes at 1/4 scale (~6.8 MB
# of pixels instead of 108 MB, and 250 MB per image once in float copies, measured before this limit).
DECODE_SIDE = 1024
# A JPEG may decode up to 10% under it, when that reaches the next DCT scale: a phone's 4000x3000 photo then decodes at
# 1/4 (1000 px), not 1/2, and its whole preparation took 36 ms on one core instead of 67 (benchmarks/paper_eval.py).
DRAFT_SIDE = 920

# Pillow's modes that its reduce and resize cannot average, converted first (palette indices, bilevel, 16-bit, CMYK).
_WORKING_MODES = {"1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I", "CMYK": "RGB", "YCbCr": "RGB",
                  "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGBA", "La": "LA"}  # fmt: skip
_ORIENTATION = 0x0112  # the EXIF tag
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@contextmanager
def decoder_errors(image: Image.Image | None = None) -> Iterator[None]:
    """Whatever the image library raises on bad data, as the service's 400 `truncated_image`.

    Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError,
    TypeError, ZeroDivisionError... depending on the format and where the data breaks (found by
    tests/app/test_decoder_fuzz.py). Only code that reads the upload runs inside: what escapes it is bad input, not a
    bug of the service; the service's own errors pass through.
    """
    try:
        yield
    except ServiceError:
        raise
    except UnidentifiedImageError:  # an OSError: no decoder recognised the data
        raise NotAnImage(f"The upload is not an image that can be read; send {SUPPORTED_TEXT}.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning where warnings are errors
        raise ImageTooLarge("The image has too many pixels to decode safely.") from None
    except Exception as exc:
        kind = f"{image.format} data" if image is not None and image.format else "image data"
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise TruncatedImage(f"The {kind} is truncated or corrupt ({reason}); upload the whole file.") from None


def open_image(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """The image with only its header read: format and size checked, pixels not decoded yet."""
    if not data:
        raise EmptyBody()
    with decoder_errors():
        image = Image.open(io.BytesIO(data))
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(f"{image.format} images are not supported; send {SUPPORTED_TEXT}.")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,}."
        )
    return image


def decoded_pixels(image: Image.Image) -> int:
    """Pixels the decoder will allocate for this opened image. A JPEG is asked first for the smallest DCT scale
    (1/2, 1/4, 1/8) that keeps DRAFT_SIDE: its decoder then never builds the full-resolution picture."""
    if max(image.size) > DECODE_SIDE and image.format in ("JPEG", "MPO"):
        with decoder_errors(image):
            image.draft(None, _scaled_size(image.size[::-1], DRAFT_SIDE))
    return image.width * image.height


def load_image(image: Image.Image) -> Image.Image:
    """The decoded first frame, no longer than DECODE_SIDE, in a mode numpy reads, EXIF orientation applied;
    TruncatedImage when the data ends early or is corrupt."""
    decoded_pixels(image)  # JPEG's DCT scaling, when the caller has not asked for it yet
    with decoder_errors(image):
        image.load()
        # Orientation lives in the metadata Pillow puts in `info`, or in TIFF tags; reading it costs a bare image
        # (most uploads from code and canvases) more than its decoding.
        turn = _upright_turn(image) if image.info or image.format == "TIFF" else None
        if image.mode != _working_mode(image):
            image = image.convert(_working_mode(image))
        if max(image.size) > DECODE_SIDE:
            image.thumbnail((DECODE_SIDE, DECODE_SIDE), Image.Resampling.BOX)  # in place; integer reduce first
        return image.transpose(turn) if turn is not None else image


def _upright_turn(image: Image.Image) -> Image.Transpose | None:
    orientation = image.getexif().get(_ORIENTATION)
    return _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def _working_mode(image: Image.Image) -> str:
    if image.mode in ("P", "PA"):
        return "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
    return _WORKING_MODES.get(image.mode, image.mode)


def decode_image(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """Decoded first frame, reduced and turned upright; refuses what is not a supported, complete image."""
    return load_image(open_image(data, limits))


def to_grayscale(image: Image.Image) -> Gray:
    """Luminance in [0, 1]; transparent pixels become a background that contrasts with the ink."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float32)
        return values / (65535.0 if values.max() > 255 else 255.0)
    if not _has_transparency(image):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    rgba = image.convert("RGBA")
    luminance = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    opaque = alpha > 0.5
    ink_is_dark = opaque.any() and float(luminance[opaque].mean()) < 0.5
    background = 1.0 if ink_is_dark else 0.0
    return alpha * luminance + (1.0 - alpha) * background


def _has_transparency(image: Image.Image) -> bool:
    # Not "La": Pillow cannot convert it to RGBA (load_image has made it LA by now).
    return image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info


def normalise_polarity(gray: Gray) -> Gray:
    """White ink on black, the background at 0 and the strongest ink at 1; the background is the border's median."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    low, high = float(gray.min()), float(gray.max())
    if background > (low + high) / 2:  # dark ink on light paper
        gray, background, high = 1.0 - gray, 1.0 - background, 1.0 - low
    if high - background < MIN_CONTRAST:
        raise BlankImage()
    return np.clip((gray - background) / (high - background), 0.0, 1.0).astype(np.float32)


def is_mnist_layout(pixels: Digit) -> bool:
    """28x28 pixels that already are an MNIST digit: white ink on black within 20x20, centred on its mass."""
    if pixels.max() < MIN_CONTRAST * 255:
        return False
    # Ink within 20 of 28 columns and rows means a black background. The box may touch the edge: centring on the
    # mass puts 1% of MNIST's own digits there.
    if max(_rows_spanned(pixels.tobytes()), _rows_spanned(pixels.T.tobytes())) not in (BOX - 1, BOX):
        return False
    # centre_of_mass in one matrix product: this check runs on every 28x28 upload.
    row_moment, col_moment, mass = (pixels.reshape(-1) @ _FIELD_MOMENTS).tolist()
    return abs(row_moment / mass - CENTRE) <= 1.0 and abs(col_moment / mass - CENTRE) <= 1.0


def _rows_spanned(raster: bytes) -> int:
    """Rows from the first to the last that hold ink, in a 28-wide raster with some ink. Byte strips, not numpy:
    each numpy call costs microseconds, and this runs on every upload."""
    first = len(raster) - len(raster.lstrip(b"\0"))
    last = len(raster.rstrip(b"\0")) - 1
    return last // FIELD - first // FIELD + 1


def mnist_layout_pixels(image: Image.Image) -> Digit | None:
    """The pixels when the decoded image already is an MNIST digit (8-bit grey, 28x28, MNIST's layout), else None."""
    if image.mode != "L" or image.size != (FIELD, FIELD):
        return None
    pixels: Digit = np.asarray(image)
    return pixels if is_mnist_layout(pixels) else None


def is_plain_mnist_png(data: bytes) -> bool:
    """A whole 28x28 PNG of 8-bit grey pixels with no metadata chunk (orientation, transparency) to apply."""
    if data[:8] != PNG_SIGNATURE or data[12:29] != _MNIST_IHDR:
        return False
    position, kind = 8, b""
    while position + 12 <= len(data):  # each chunk: length, type, data, CRC
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind not in _PIXEL_CHUNKS:
            return False
        position += 12 + length
    return kind == b"IEND" and position == len(data)


def mnist_png_pixels(data: bytes) -> Digit | None:
    """The pixels of a plain 28x28 grey PNG already laid out like MNIST, decoded by libspng; None for anything else,
    which Pillow reads. Uploads from MNIST tools mostly are such PNGs, and Pillow's reading of one costs more than
    classifying it."""
    if not is_plain_mnist_png(data):
        return None
    try:
        pixels: Digit = pyspng.load(data)
    except RuntimeError:  # corrupt pixel data: Pillow's reading says what is wrong
        return None
    return pixels if is_mnist_layout(pixels) else None


def crop_to_ink(ink: Gray) -> Gray:
    """The bounding box of the pixels above the noise floor, with fainter pixels set to 0."""
    cleaned = np.where(ink >= NOISE_FLOOR, ink, 0.0).astype(np.float32)
    rows, cols = np.flatnonzero(cleaned.any(axis=1)), np.flatnonzero(cleaned.any(axis=0))
    if len(rows) == 0:
        raise BlankImage()
    return cleaned[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(ink: Gray) -> float:
    """Mean stroke width in pixels, estimated as 2 * area / perimeter of the binarised ink."""
    solid = ink > 0.5
    padded = np.pad(solid, 1)
    interior = solid & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    perimeter = int((solid & ~interior).sum())
    return 2.0 * int(solid.sum()) / perimeter if perimeter else 0.0


def _resize(ink: Gray, width: int, height: int) -> Gray:
    shrinking = width <= ink.shape[1] and height <= ink.shape[0]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(ink, mode="F").resize((width, height), resample), dtype=np.float32)


def _scaled_size(shape: tuple[int, ...], longest: int) -> tuple[int, int]:
    height, width = shape
    scale = longest / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thicken_strokes(crop: Gray) -> Gray:
    """Thin pen strokes (a photo of a fine-liner, a 1-px canvas line) widened to MNIST's stroke width."""
    if max(crop.shape) > WORK_SIZE:
        crop = _resize(crop, *_scaled_size(crop.shape, WORK_SIZE))
    return thickened(crop, max(crop.shape))


def thickened(crop: Gray, side: int) -> Gray:
    """The crop's strokes widened to MNIST's width for a digit `side` px tall or wide (2.5 px at the 20-px box)."""
    missing = STROKE_AT_BOX * side / BOX - stroke_width(crop)
    if missing < 1.0:
        return crop
    size = 2 * round(missing / 2) + 1  # MaxFilter takes odd sizes; each step adds 2 px of width
    dilated = Image.fromarray(crop, mode="F").filter(ImageFilter.MaxFilter(size))
    return np.asarray(dilated, dtype=np.float32)


def fit_box(crop: Gray) -> Gray:
    """The crop scaled so its longest side is 20 px, aspect ratio kept."""
    return np.clip(_resize(crop, *_scaled_size(crop.shape, BOX)), 0.0, 1.0)


def centre_of_mass(ink: Gray) -> npt.NDArray[np.float64]:
    """(row, column) of the ink's centre of mass."""
    height, width = ink.shape
    row_mass, col_mass = ink.sum(axis=1, dtype=np.float64), ink.sum(axis=0, dtype=np.float64)
    return np.array([row_mass @ np.arange(height), col_mass @ np.arange(width)]) / row_mass.sum()


def place_in_field(digit: Gray) -> Gray:
    """The digit pasted into a 28x28 field so that its centre of mass lands on pixel (14, 14)."""
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    height, width = digit.shape
    top, left = np.rint(CENTRE - centre_of_mass(digit)).astype(int)
    top, left = int(np.clip(top, 0, FIELD - height)), int(np.clip(left, 0, FIELD - width))
    field[top : top + height, left : left + width] = digit
    return field


def to_uint8(ink: Gray) -> Digit:
    return np.rint(np.clip(ink, 0.0, 1.0) * 255).astype(np.uint8)


def mnist_digit(image: Image.Image) -> Digit:
    """Any decoded image -> the 28x28 MNIST-style digit the models expect."""
    pixels = mnist_layout_pixels(image)
    if pixels is not None:
        return pixels
    ink = paper_ink(image)  # photos of paper: the handwriting alone; None for clean uploads
    if ink is None:
        ink = normalise_polarity(to_grayscale(image))
    return digit_of_ink(ink)


def digit_of_ink(ink: Gray) -> Digit:
    """White-on-black ink (H, W) -> the 28x28 digit: crop, thicken thin strokes, fit 20 px, centre the mass.
    /read prepares each digit of a number with it too."""
    digit = fit_box(thicken_strokes(crop_to_ink(ink)))
    if float(digit.max()) < MIN_CONTRAST:
        raise BlankImage()
    return to_uint8(place_in_field(digit))


def pair_of_ink(ink: Gray) -> Pair:
    """White-on-black ink (H, W) of two touching digits -> the (28, 56) field the pair reader takes: cropped,
    strokes thickened as a digit's of the same height, fitted into 20 px high and PAIR_WIDTH wide, centred."""
    crop = crop_to_ink(ink)
    if crop.shape[0] > WORK_SIZE:
        crop = _resize(crop, max(1, round(crop.shape[1] * WORK_SIZE / crop.shape[0])), WORK_SIZE)
    crop = thickened(crop, crop.shape[0])  # measured against the height: two digits are twice as wide as one
    scale = min(BOX / crop.shape[0], PAIR_WIDTH / crop.shape[1])
    width, height = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    fitted = np.clip(_resize(crop, width, height), 0.0, 1.0)
    if float(fitted.max()) < MIN_CONTRAST:
        raise BlankImage()
    field = np.zeros((FIELD, 2 * FIELD), dtype=np.float32)
    top, left = (FIELD - height) // 2, (2 * FIELD - width) // 2
    field[top : top + height, left : left + width] = fitted
    return to_uint8(field)


def preprocess(data: bytes, limits: Limits = Limits()) -> Digit:
    """Uploaded bytes -> (28, 28) uint8 digit; raises the service's input errors."""
    pixels = mnist_png_pixels(data)
    return pixels if pixels is not None else mnist_digit(decode_image(data, limits))


def model_input(digits: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """(N, 28, 28) uint8 -> (N, 28, 28, 1) float32 in [0, 1], the models' `image` input."""
    return (digits.astype(np.float32) / 255.0)[..., np.newaxis]
