from __future__ import annotations

import base64
import hashlib
import zlib

import numpy as np
import pytest

from app.errors import BadToken
from app.handlers import http_status
from app.tokens import decode_token, encode_token
from training.data import Mnist


def test_round_trip_is_exact_and_compact(mnist_sample: Mnist) -> None:
    for digit in mnist_sample.test.images[:20]:
        token = encode_token(digit)
        assert len(token) < 600
        np.testing.assert_array_equal(decode_token(token), digit)


def test_token_is_url_safe(mnist_sample: Mnist) -> None:
    token = encode_token(mnist_sample.test.images[0])
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def tampered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


EMPTY = "The activations token is empty or too long; use the activations_url from /predict."
NOT_BASE64 = "The activations token is not valid base64url; copy it unchanged from /predict."
TRUNCATED = "The activations token is truncated or from an unknown version; request a new one."
CORRUPT = "The activations token is corrupt; copy it unchanged from /predict."
ALTERED = "The activations token failed its integrity check; it was altered or made with another key."


def b64(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: "", EMPTY),
        (lambda t: "A" * 2049, EMPTY),
        (lambda t: "Ag" + "A" * 2046, CORRUPT),  # the longest accepted length, judged by its content: version 2, junk
        (lambda t: t[:10], TRUNCATED),
        (lambda t: b64(b"\x02" + b"\0" * 15), TRUNCATED),  # shorter than a version byte and a digest
        (lambda t: b64(b"\x02" + b"\0" * 16), CORRUPT),  # a digest of nothing: no bitmap
        (lambda t: t[: len(t) // 8 * 4], CORRUPT),  # whole base64 quads, half the payload: values missing
        (lambda t: "!!" + t, NOT_BASE64),
        (lambda t: t[:8] + "=" + t[8:], NOT_BASE64),
        (lambda t: "Aw" + t[2:], TRUNCATED),
        (tampered, ALTERED),
        (lambda t: b64(b"\x02" + b"x" * 40), CORRUPT),
    ],
)
def test_bad_tokens_are_refused_saying_why(make, message: str, mnist_sample: Mnist) -> None:
    with pytest.raises(BadToken) as refused:
        decode_token(make(encode_token(mnist_sample.test.images[0])))
    assert refused.value.detail == message
    assert (http_status(refused.value), refused.value.code) == (400, "bad_token")


def test_tokens_carry_no_padding_and_keep_every_last_character() -> None:
    """Tokens of many digits, so their last characters cover the alphabet: none is padding, none is lost."""
    rng = np.random.default_rng(7)
    last = set()
    for ink in rng.integers(1, 784, 300):
        digit = np.zeros(784, dtype=np.uint8)
        digit[rng.choice(784, ink, replace=False)] = rng.integers(1, 256, ink)
        token = encode_token(digit.reshape(28, 28), key="k")
        assert "=" not in token
        last.add(token[-1])
        np.testing.assert_array_equal(decode_token(token, key="k").ravel(), digit)
    assert len(last) > 40


def test_tokens_are_bound_to_the_key(mnist_sample: Mnist) -> None:
    token = encode_token(mnist_sample.test.images[0], key="replica-secret")
    np.testing.assert_array_equal(decode_token(token, key="replica-secret"), mnist_sample.test.images[0])
    with pytest.raises(BadToken, match="another key"):
        decode_token(token, key="other")


def test_tokens_of_the_draft_zlib_format_are_refused(mnist_sample: Mnist) -> None:
    """Version 1 (zlib of the pixels) was a draft, and a 0.1 service has no old clients: even keyed right, refused."""
    pixels = mnist_sample.test.images[0].tobytes()
    payload = b"\x01" + zlib.compress(pixels) + hashlib.blake2b(pixels, digest_size=16, key=b"k").digest()
    with pytest.raises(BadToken, match="unknown version"):
        decode_token(base64.urlsafe_b64encode(payload).rstrip(b"=").decode(), key="k")


@pytest.mark.parametrize("ink", [0, 1, 300, 784])
def test_any_amount_of_ink_round_trips(ink: int) -> None:
    rng = np.random.default_rng(ink)
    digit = np.zeros(784, dtype=np.uint8)
    digit[rng.choice(784, ink, replace=False)] = rng.integers(1, 256, ink)
    np.testing.assert_array_equal(decode_token(encode_token(digit.reshape(28, 28))), digit.reshape(28, 28))
