"""Preprocessing as pure functions: every kind of real upload becomes an MNIST-like digit, or a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app import errors
from app.preprocess import (
    Limits,
    centre_of_mass,
    crop_to_ink,
    decode_image,
    fit_box,
    is_mnist_layout,
    mnist_layout_pixels,
    mnist_png_pixels,
    normalise_polarity,
    place_in_field,
    preprocess,
    stroke_width,
    to_grayscale,
)
from tests.helpers import canvas_of, encode, photo_of
from training.data import Mnist


@pytest.fixture(scope="module")
def seven(mnist_sample: Mnist) -> np.ndarray:
    return mnist_sample.test.images[0]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 images."""
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_mnist_digits_pass_through_unchanged(mnist_sample: Mnist) -> None:
    images = np.concatenate([mnist_sample.train.images, mnist_sample.test.images])
    touching_the_edge = [i for i, image in enumerate(images) if (image[[0, -1]].any() or image[:, [0, -1]].any())]
    assert touching_the_edge  # MNIST centres digits on their mass, which puts some against the edge
    changed = [i for i, image in enumerate(images) if not np.array_equal(preprocess(encode(image)), image)]
    assert changed == []
    # and each of them as a plain PNG is read by libspng, without Pillow
    assert all(np.array_equal(mnist_png_pixels(encode(image)), image) for image in images)


def test_output_is_28x28_uint8_white_on_black(seven: np.ndarray) -> None:
    digit = preprocess(encode(photo_of(seven), "JPEG"))
    assert digit.shape == (28, 28)
    assert digit.dtype == np.uint8
    assert digit[0].max() == 0
    assert digit.max() == 255


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("inverted", lambda d: encode(255 - d)),
        ("photo jpeg 300x300 off-centre", lambda d: encode(photo_of(d), "JPEG", quality=85)),
        ("large 2000x2000", lambda d: encode(photo_of(d, size=2000, scale=40, offset=(900, 300)))),
        ("rgba canvas, black ink", lambda d: encode(canvas_of(d))),
        ("rgba canvas, white ink", lambda d: encode(canvas_of(d, colour=(255, 255, 255)))),
        ("palette gif", lambda d: encode(Image.fromarray(d).convert("P"), "GIF")),
        ("16-bit png", lambda d: encode(Image.fromarray(d.astype(np.uint16) * 257))),
        ("bmp", lambda d: encode(d, "BMP")),
        ("webp", lambda d: encode(Image.fromarray(d).resize((112, 112)), "WEBP", quality=90)),
        ("tiff", lambda d: encode(d, "TIFF")),
        ("cmyk jpeg", lambda d: encode(Image.fromarray(255 - d).resize((140, 140)).convert("CMYK"), "JPEG")),
        ("small and off-centre", lambda d: encode(np.pad(d, ((0, 30), (40, 0))))),
    ],
)
def test_real_uploads_look_like_the_mnist_digit(name: str, make, seven: np.ndarray) -> None:
    assert similarity(preprocess(make(seven)), seven) > 0.8, name


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_honoured(fmt: str, seven: np.ndarray) -> None:
    # Stored rotated a quarter turn, with EXIF orientation 6 saying "rotate 90 degrees clockwise to view".
    stored = Image.fromarray(255 - seven).resize((140, 140)).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = preprocess(encode(stored, fmt, exif=exif))
    assert similarity(upright, seven) > 0.8
    assert similarity(preprocess(encode(stored, fmt)), seven) < 0.5


def test_normalise_polarity_makes_ink_white_on_zero() -> None:
    paper = np.full((10, 10), 0.9, dtype=np.float32)
    paper[3:6, 3:6] = 0.1
    ink = normalise_polarity(paper)
    assert ink[0, 0] == 0.0
    assert ink[4, 4] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("paper", "pen"),
    [(0.35, 0.05), (0.55, 0.95), (0.9, 0.6), (0.1, 0.4)],
    ids=["dark-ink-on-dim-paper", "light-ink-on-grey-paper", "faint-pencil-on-white", "chalk-on-blackboard"],
)
def test_polarity_follows_the_images_own_range(paper: float, pen: float) -> None:
    # Whether the paper is the light or the dark side is judged against the image's own range, not a fixed 0.5.
    image = np.full((10, 10), paper, dtype=np.float32)
    image[3:6, 3:6] = pen
    ink = normalise_polarity(image)
    assert ink[0, 0] == 0.0
    assert ink[4, 4] == pytest.approx(1.0)


def test_crop_drops_faint_noise_and_trims_to_the_ink() -> None:
    ink = np.full((20, 20), 0.05, dtype=np.float32)
    ink[5:9, 7:10] = 1.0
    crop = crop_to_ink(ink)
    assert crop.shape == (4, 3)


def test_fit_box_keeps_the_aspect_ratio() -> None:
    assert fit_box(np.ones((100, 50), dtype=np.float32)).shape == (20, 10)
    assert fit_box(np.ones((3, 9), dtype=np.float32)).shape == (7, 20)


def test_place_in_field_centres_the_mass_on_14_14() -> None:
    digit = np.zeros((20, 10), dtype=np.float32)
    digit[:, :3] = 1.0  # mass on the left side
    field = place_in_field(digit)
    np.testing.assert_allclose(centre_of_mass(field), [14, 14], atol=0.5)


def test_stroke_width_estimate() -> None:
    bar = np.zeros((40, 40), dtype=np.float32)
    bar[5:35, 10:14] = 1.0
    assert stroke_width(bar) == pytest.approx(4, rel=0.25)


def thin_seven() -> np.ndarray:
    """A 7 drawn with a 4 px pen on a 400 px image: 0.2 px wide once scaled down, unless thickened."""
    outline = np.zeros((400, 400), dtype=np.uint8)
    outline[80:84, 100:300] = 255
    for row in range(84, 330):
        column = 300 - (row - 84) * 150 // 246
        outline[row, column - 2 : column + 2] = 255
    return outline


def test_thin_strokes_are_thickened() -> None:
    digit = preprocess(encode(thin_seven()))
    assert stroke_width(digit.astype(np.float32) / 255) >= 2.0
    assert digit.max() == 255


def test_mnist_layout_detection(seven: np.ndarray) -> None:
    np.testing.assert_array_equal(mnist_layout_pixels(Image.fromarray(seven)), seven)
    assert mnist_layout_pixels(Image.fromarray(np.roll(seven, 5, axis=1))) is None
    assert mnist_layout_pixels(Image.fromarray(seven).convert("RGB")) is None
    big = np.zeros((28, 28), np.uint8)
    big[2:26, 2:26] = 255  # centred, but 24 px wide: it needs scaling to MNIST's 20
    faint = seven // 12  # MNIST's layout, but too faint to use without stretching its contrast
    assert not any(is_mnist_layout(pixels) for pixels in (big, faint, np.zeros((28, 28), np.uint8)))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("RGB", lambda d: encode(Image.fromarray(d).convert("RGB"))),
        ("16-bit", lambda d: encode(Image.fromarray(d.astype(np.uint16) * 257))),
        ("transparency chunk", lambda d: encode(d, transparency=0)),
        ("text chunk", lambda d: encode(d, pnginfo=_text_info())),
        ("not in MNIST's layout", lambda d: encode(np.roll(d, 5, axis=1))),
        ("cut short", lambda d: encode(d)[:-6]),
        ("corrupt pixel data", lambda d: _corrupt(encode(d))),
        ("JPEG", lambda d: encode(d, "JPEG")),
    ],
)
def test_only_plain_mnist_pngs_skip_pillow(name: str, make, seven: np.ndarray) -> None:
    assert mnist_png_pixels(make(seven)) is None, name


def _text_info() -> PngInfo:
    info = PngInfo()
    info.add_text("Software", "a drawing tool")
    return info


def _corrupt(png: bytes) -> bytes:
    middle = len(png) // 2
    return png[:middle] + bytes([png[middle] ^ 0xFF]) + png[middle + 1 :]


def test_png_orientation_is_honoured_in_mnist_layout(mnist_sample: Mnist, seven: np.ndarray) -> None:
    # A digit stored a quarter turn round, still laid out like MNIST, with EXIF saying so: Pillow's reading applies it.
    digit = next(d for d in mnist_sample.test.images if is_mnist_layout(np.rot90(d)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    np.testing.assert_array_equal(preprocess(encode(np.rot90(digit), exif=exif)), digit)
    with pytest.raises(errors.TruncatedImage):
        preprocess(_corrupt(encode(seven)))


def test_grayscale_of_16_bit_uses_the_full_range() -> None:
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    np.testing.assert_allclose(to_grayscale(image), [[0.0, 1.0]])


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", errors.EmptyBody, "no image"),
        (b"hello, world", errors.NotAnImage, "not an image"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj", errors.NotAnImage, "not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', errors.NotAnImage, "not an image"),
        (encode(np.zeros((28, 28), np.uint8), "PPM"), errors.UnsupportedFormat, "PPM images are not supported"),
        (encode(np.full((30, 30), 255, np.uint8)), errors.BlankImage, "blank"),
        (encode(np.full((1, 1), 0, np.uint8)), errors.BlankImage, "blank"),
        (encode(np.full((50, 50), 128, np.uint8), "JPEG"), errors.BlankImage, "blank"),
    ],
)
def test_bad_inputs_raise_their_own_error(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        preprocess(data)


def test_truncated_png_and_jpeg_are_reported(seven: np.ndarray) -> None:
    for fmt in ("PNG", "JPEG"):
        data = encode(photo_of(seven), fmt)
        with pytest.raises(errors.TruncatedImage, match="truncated"):
            preprocess(data[: len(data) // 2])


def test_pixel_limit_refuses_before_decoding() -> None:
    data = encode(Image.new("1", (20000, 20000)))  # a few KB, 400 megapixels
    assert len(data) < 100_000
    with pytest.raises(errors.ImageTooLarge, match="pixels"):
        decode_image(data)
    with pytest.raises(errors.ImageTooLarge, match="limit is 100"):
        decode_image(encode(np.zeros((20, 20), np.uint8)), Limits(max_pixels=100))
