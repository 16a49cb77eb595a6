"""Each preparation step on small hand-made inputs, with exact expected values: the boundaries of every rule (the
noise floor, the polarity midpoint, the MNIST-layout tolerances, the field's edges), every image mode the decoder
can meet, and the value scales. The end-to-end tables are in test_preprocess.py; these pin what they cannot see."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app import errors
from app.preprocess import (
    Limits,
    _rows_spanned,
    crop_to_ink,
    decode_image,
    decoded_pixels,
    fit_box,
    is_mnist_layout,
    is_plain_mnist_png,
    load_image,
    mnist_layout_pixels,
    model_input,
    normalise_polarity,
    open_image,
    pair_of_ink,
    place_in_field,
    preprocess,
    stroke_width,
    thicken_strokes,
    to_grayscale,
    to_uint8,
)
from tests.helpers import encode


def gray(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


# to_grayscale: every mode to [0, 1] float32, exactly


@pytest.mark.parametrize("mode", ["I", "I;16", "I;16B", "I;16L"])
def test_16_bit_grey_is_scaled_by_its_full_range(mode: str) -> None:
    image = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.uint16)).convert("I")
    if mode != "I":
        image = Image.frombytes(mode, (3, 1), np.array([0, 1000, 65535], ">u2" if mode == "I;16B" else "<u2").tobytes())
    values = to_grayscale(image)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.array([[0, 1000, 65535]], np.float32) / 65535.0)


@pytest.mark.parametrize(("top", "scale"), [(255, 255.0), (256, 65535.0)])
def test_16_bit_grey_holding_8_bit_values_is_read_as_8_bit(top: int, scale: float) -> None:
    image = Image.fromarray(np.array([[0, 51, top]], dtype=np.uint16))
    np.testing.assert_array_equal(to_grayscale(image), np.array([[0, 51, top]], np.float32) / scale)


def test_float_images_keep_their_values() -> None:
    image = Image.fromarray(np.array([[0.0, 127.5, 255.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(to_grayscale(image), [[0.0, 0.5, 1.0]])


def test_8_bit_grey_and_colour_are_divided_by_255() -> None:
    values = to_grayscale(Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8)))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.array([[0, 51, 255]], np.float32) / 255.0)


def transparent_picture(mode: str, ink: int) -> Image.Image:
    """3 pixels: ink fully opaque, nothing (transparent black), ink at alpha 102 (0.4)."""
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(ink, ink, ink, 255), (0, 0, 0, 0), (ink, ink, ink, 102)])
    return rgba if mode == "RGBA" else rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa"])
@pytest.mark.parametrize(("ink", "background"), [(0, 1.0), (255, 0.0)])
def test_transparent_pixels_become_a_background_that_contrasts_with_the_ink(
    mode: str, ink: int, background: float
) -> None:
    values = to_grayscale(transparent_picture(mode, ink))
    alpha = np.array([1.0, 0.0, 102 / 255], np.float32)
    luminance = np.asarray(transparent_picture(mode, ink).convert("RGBA").convert("L"), np.float32)[0] / 255.0
    expected = alpha * luminance + (1.0 - alpha) * background
    assert values.dtype == np.float32
    np.testing.assert_allclose(values[0], expected, atol=1e-6)
    assert values[0, 1] == background


def test_a_transparency_colour_in_the_metadata_counts_as_transparency() -> None:
    pixels = np.array([[0, 100, 0]], dtype=np.uint8)  # dark grey ink; black is the transparent colour
    image = Image.open(io.BytesIO(encode(pixels, transparency=0)))
    image.load()
    np.testing.assert_allclose(to_grayscale(image), [[1.0, 100 / 255, 1.0]], atol=1e-6)  # a light background


def test_ink_as_bright_as_it_is_dark_is_taken_for_light_ink() -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 255), (255, 255, 255, 255), (9, 9, 9, 0)])  # opaque mean luminance exactly 0.5
    np.testing.assert_array_equal(to_grayscale(rgba), [[0.0, 1.0, 0.0]])  # the background: black


# the decoded mode


@pytest.mark.parametrize(
    ("mode", "info", "working"),
    [
        ("P", {}, "RGB"),
        ("P", {"transparency": 0}, "RGBA"),
        ("PA", {}, "RGBA"),
        ("1", {}, "L"),
        ("I;16", {}, "I"),
        ("CMYK", {}, "RGB"),
        ("YCbCr", {}, "RGB"),
        ("RGBX", {}, "RGB"),
        ("RGBa", {}, "RGBA"),
        ("La", {}, "LA"),
        ("L", {}, "L"),
        ("LA", {}, "LA"),
        ("RGB", {}, "RGB"),
        ("RGBA", {}, "RGBA"),
    ],
)
def test_decoded_images_come_in_a_mode_numpy_reads(mode: str, info: dict, working: str) -> None:
    image = Image.new(mode, (4, 3))
    image.info.update(info)
    loaded = load_image(image)
    assert loaded.mode == working
    assert loaded.size == (4, 3)


def test_a_large_image_is_reduced_by_box_averaging() -> None:
    pixels = (np.arange(1500 * 4) % 251).astype(np.uint8).reshape(4, 1500)
    loaded = load_image(Image.open(io.BytesIO(encode(pixels))))
    assert loaded.size == (1024, 3)
    expected = Image.fromarray(pixels).resize((1024, 3), Image.Resampling.BOX)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(expected))


def test_an_image_of_the_decoding_side_is_kept_as_it_is() -> None:
    pixels = (np.arange(1024 * 2) % 251).astype(np.uint8).reshape(2, 1024)
    np.testing.assert_array_equal(np.asarray(load_image(Image.open(io.BytesIO(encode(pixels))))), pixels)


def jpeg(width: int, height: int, **options: object) -> bytes:
    return encode(Image.new("L", (width, height), 200), "JPEG", **options)


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((4000, 3000), (1000, 750)), ((3000, 4000), (750, 1000)), ((1024, 1024), (1024, 1024)), ((500, 300), (500, 300))],
)
def test_a_large_jpeg_is_decoded_at_the_dct_scale_that_keeps_920_px(
    size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    image = open_image(jpeg(*size))
    assert decoded_pixels(image) == decoded[0] * decoded[1]
    assert image.size == decoded


def test_a_camera_mpo_is_decoded_at_its_dct_scale_too() -> None:
    frames = [Image.new("RGB", (4000, 3000), (200, 200, 200)), Image.new("RGB", (4000, 3000), (100, 100, 100))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:])
    image = open_image(buffer.getvalue())
    assert image.format == "MPO"
    assert decoded_pixels(image) == 1000 * 750


def test_a_truncated_file_names_its_format() -> None:
    data = encode((np.arange(300 * 300) % 256).astype(np.uint8).reshape(300, 300))
    with pytest.raises(errors.TruncatedImage) as refused:
        decode_image(data[: len(data) // 2])
    assert refused.value.detail.startswith("The PNG data is truncated or corrupt (")
    assert refused.value.detail.endswith("); upload the whole file.")


# the pixel limit


def test_an_image_at_the_pixel_limit_is_accepted_and_one_over_is_refused_with_its_size() -> None:
    data = encode(np.zeros((200, 300), np.uint8))
    assert open_image(data, Limits(max_pixels=60_000)).size == (300, 200)
    with pytest.raises(errors.ImageTooLarge) as refused:
        open_image(data, Limits(max_pixels=59_999))
    assert refused.value.detail == "The image is 300x200 = 60,000 pixels; the limit is 59,999."
    with pytest.raises(errors.ImageTooLarge):
        preprocess(data, Limits(max_pixels=59_999))


# polarity, crop, stroke width, placement, scales


def test_a_background_exactly_midway_is_taken_as_dark() -> None:
    border = 0.5
    picture = np.full((5, 5), border, np.float32)
    picture[2, 1], picture[2, 3] = 0.0, 1.0  # the darkest and the brightest pixels: their midpoint is the border
    out = normalise_polarity(picture)
    assert out.dtype == np.float32
    assert out[2, 3] == 1.0  # light ink on a dark background: kept as it is
    assert out[2, 1] == 0.0  # darker than the background: clipped to it
    assert out[0, 0] == 0.0


def test_the_noise_floor_itself_is_ink() -> None:
    picture = gray([0, 0, 0], [0, 0.2, 0.1], [0, 0, 0])
    np.testing.assert_array_equal(crop_to_ink(picture), gray([0.2]))


def test_a_single_row_of_ink_is_cropped_to_it() -> None:
    picture = gray([0, 0, 0, 0], [0, 0.9, 0.8, 0], [0, 0, 0, 0])
    np.testing.assert_array_equal(crop_to_ink(picture), gray([0.9, 0.8]))


def test_stroke_width_takes_ink_above_half_brightness_and_is_zero_without_ink() -> None:
    assert stroke_width(np.zeros((4, 4), np.float32)) == 0.0
    line = np.zeros((6, 6), np.float32)
    line[:, 2] = 0.5  # exactly half bright: not ink
    assert stroke_width(line) == 0.0
    line[:, 2] = 0.51  # a 1-px line of ink: 6 pixels, all on the perimeter
    assert stroke_width(line) == 2.0


def test_a_fine_line_is_widened_by_the_missing_width() -> None:
    crop = np.zeros((44, 44), np.float32)
    crop[:, 21] = 1.0  # 1 px wide (estimated 2), MNIST's width at this size is 2.5 * 44 / 20 = 5.5: 3.5 missing
    widened = thicken_strokes(crop)
    assert widened.dtype == np.float32
    assert np.flatnonzero(widened[22]).tolist() == [19, 20, 21, 22, 23]  # a 5-px max filter: 2 px each side


def test_a_line_missing_less_than_2_px_is_widened_too() -> None:
    crop = np.zeros((30, 30), np.float32)
    crop[:, 14] = 1.0  # estimated 2 px, MNIST's 3.75 at this size: 1.75 missing, a 3-px filter
    assert np.flatnonzero(thicken_strokes(crop)[15]).tolist() == [13, 14, 15]


@pytest.mark.parametrize(("mass_at", "top"), [(0, 8), (19, 0)])
def test_the_digit_stays_inside_the_field_however_its_mass_lies(mass_at: int, top: int) -> None:
    digit = np.zeros((20, 20), np.float32)
    digit[mass_at, :] = 1.0  # all the mass on the top or bottom row: centring it would push the digit out
    field = place_in_field(digit)
    assert field.dtype == np.float32
    np.testing.assert_array_equal(field[top : top + 20, 4:24], digit)
    assert field.sum() == digit.sum()
    across = place_in_field(digit.T.copy())  # the same, sideways
    np.testing.assert_array_equal(across[4:24, top : top + 20], digit.T)


def test_a_digit_one_pixel_thin_keeps_one_pixel_when_fitted() -> None:
    assert fit_box(np.ones((40, 1), np.float32)).shape == (20, 1)
    assert fit_box(np.ones((1, 40), np.float32)).shape == (1, 20)


def resized(ink: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(ink, mode="F").resize(size, resample), dtype=np.float32)


@pytest.mark.parametrize(
    ("shape", "resample"),
    [
        ((40, 10), Image.Resampling.BOX),
        ((10, 4), Image.Resampling.BILINEAR),
        ((21, 1), Image.Resampling.BOX),  # one side kept at 1 px, the other shrinking
        ((1, 21), Image.Resampling.BOX),
        ((19, 1), Image.Resampling.BILINEAR),  # one side kept at 1 px, the other growing
        ((1, 19), Image.Resampling.BILINEAR),
    ],
)
def test_fitting_averages_when_shrinking_and_interpolates_when_enlarging(
    shape: tuple[int, int], resample: Image.Resampling
) -> None:
    ink = np.random.default_rng(1).random(shape, dtype=np.float32)
    height, width = shape
    scale = 20 / max(shape)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    np.testing.assert_array_equal(fit_box(ink), np.clip(resized(ink, size, resample), 0, 1))


def test_to_uint8_clips_and_rounds() -> None:
    np.testing.assert_array_equal(to_uint8(gray([-0.5, 0.5, 1.5, 0.1])), [[0, 128, 255, 26]])


def test_model_input_is_unit_range_float32_with_a_channel() -> None:
    digits = np.array([[[0, 51, 255]]], dtype=np.uint8)
    values = model_input(digits)
    assert values.dtype == np.float32
    assert values.shape == (1, 1, 3, 1)
    np.testing.assert_array_equal(values[0, 0, :, 0], np.array([0, 51, 255], np.float32) / 255.0)


# MNIST-layout detection


def spanning(rows: int, cols: int, centre_row: float = 14.0) -> np.ndarray:
    """A 28x28 block of ink `rows` x `cols`, its centre of mass on (centre_row, 14) as near as pixels allow."""
    pixels = np.zeros((28, 28), np.uint8)
    top = int(centre_row - (rows - 1) / 2)
    left = round(14 - (cols - 1) / 2)
    pixels[top : top + rows, left : left + cols] = 255
    return pixels


@pytest.mark.parametrize(("rows", "layout"), [(18, False), (19, True), (20, True), (21, False)])
def test_mnist_layout_spans_19_or_20_rows_or_columns(rows: int, layout: bool) -> None:
    assert is_mnist_layout(spanning(rows, 10)) is layout
    assert is_mnist_layout(spanning(10, rows).T.copy()) is layout


@pytest.mark.parametrize(
    ("rows", "centre", "layout"), [(19, 15.0, True), (20, 15.5, False), (19, 13.0, True), (20, 12.5, False)]
)
def test_mnist_layout_centres_the_mass_within_one_pixel(rows: int, centre: float, layout: bool) -> None:
    pixels = spanning(rows, 10, centre)
    assert np.flatnonzero(pixels.any(axis=1)).mean() == centre
    assert is_mnist_layout(pixels) is layout
    assert is_mnist_layout(pixels.T.copy()) is layout


@pytest.mark.parametrize(
    ("raster", "rows"),
    [
        (bytes(27) + b"\x01", 1),  # ink in the last column of the first row
        (bytes(28) + b"\x01" + bytes(27), 1),  # in the first column of the second row
        (b"\x01" + bytes(54) + b"\x01", 2),
        (bytes(28) + b"\x01" + bytes(54) + b"\x01" + bytes(28), 2),
    ],
)
def test_rows_spanned_counts_rows_from_the_first_ink_to_the_last(raster: bytes, rows: int) -> None:
    assert _rows_spanned(raster) == rows


# the fast path for plain MNIST PNGs


def png_chunk(kind: bytes, data: bytes, length: int | None = None) -> bytes:
    size = len(data) if length is None else length
    return struct.pack(">I", size) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def plain_png(extra: bytes = b"", ihdr: bytes | None = None) -> bytes:
    header = ihdr or struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + bytes(28) for _ in range(28)))
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"") + extra
    )


@pytest.mark.parametrize(
    ("data", "plain"),
    [
        (plain_png(), True),
        (plain_png(b"junk after the end"), False),
        (plain_png()[:-12], False),  # no IEND
        (plain_png(ihdr=struct.pack(">IIBBBBB", 28, 28, 8, 2, 0, 0, 0)), False),  # colour
        (plain_png(ihdr=struct.pack(">IIBBBBB", 28, 28, 16, 0, 0, 0, 0)), False),  # 16-bit
        (b"\x89PNX\r\n\x1a\n" + plain_png()[8:], False),
        (plain_png()[:33] + png_chunk(b"tEXt", b"a\0b") + plain_png()[33:], False),
        (plain_png()[:33] + png_chunk(b"IDAT", b"", length=0xFFFFFFF0), False),  # a length past the end
        (plain_png()[:33] + png_chunk(b"IDAT", b"", length=0xFFFFFFF4), False),  # read as signed, it would loop
    ],
)
def test_only_a_whole_plain_28x28_grey_png_takes_the_fast_path(data: bytes, plain: bool) -> None:
    assert is_plain_mnist_png(data) is plain


def test_only_28x28_grey_images_are_taken_as_they_are() -> None:
    pixels = spanning(20, 10)
    np.testing.assert_array_equal(mnist_layout_pixels(Image.fromarray(pixels)), pixels)
    assert mnist_layout_pixels(Image.fromarray(np.pad(pixels, ((0, 2), (0, 0))))) is None  # 28 wide, 30 high
    assert mnist_layout_pixels(Image.fromarray(pixels).convert("RGB")) is None


@pytest.mark.parametrize(("height", "width", "fitted"), [(40, 60, (20, 30)), (30, 150, (10, 52)), (80, 40, (20, 10))])
def test_a_pair_is_fitted_20_px_high_at_most_52_wide_and_centred(height: int, width: int, fitted: tuple) -> None:
    ink = np.ones((height, width), np.float32)  # solid: no stroke to thicken
    pair = pair_of_ink(np.pad(ink, 5))
    assert pair.shape == (28, 56)
    assert pair.dtype == np.uint8
    rows, cols = np.flatnonzero(pair.any(axis=1)), np.flatnonzero(pair.any(axis=0))
    assert (len(rows), len(cols)) == fitted
    assert (rows[0], cols[0]) == ((28 - fitted[0]) // 2, (56 - fitted[1]) // 2)


def test_a_thin_pair_is_thickened_as_a_digit_of_its_height_and_a_blank_one_refused() -> None:
    ink = np.zeros((100, 151), np.float32)
    ink[:, [0, 75, 150]] = 1.0  # 1-px strokes, 100 px tall: 20 px high once fitted, the middle one ~2.5 px wide
    row = pair_of_ink(ink)[14].astype(np.float32) / 255
    middle = row[20:36]  # the field's middle columns: the middle stroke alone
    assert 1.8 <= middle.sum() <= 3.0
    with pytest.raises(errors.BlankImage):
        pair_of_ink(np.full((30, 60), 0.01, np.float32))
