"""Stateless activation tokens: the preprocessed 28x28 digit itself, compressed and integrity-checked.

A token is URL-safe base64 of: version byte | zlib(784 pixel bytes) | 16-byte BLAKE2b of the pixels, keyed by
MNIST_TOKEN_KEY. Any replica sharing the key can verify and decode it; no server memory is involved.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib

import numpy as np

from app.errors import BadToken
from app.preprocess import FIELD, Digit

VERSION = b"\x01"
DIGEST_SIZE = 16
PIXELS = FIELD * FIELD
MAX_TOKEN_CHARS = 2048  # zlib never expands 784 bytes beyond ~800; anything longer is not ours


def _digest(pixels: bytes, key: bytes) -> bytes:
    return hashlib.blake2b(pixels, digest_size=DIGEST_SIZE, key=key).digest()


def _compress(pixels: bytes) -> bytes:
    # A 1 KiB window and the smallest memory level cover 784 bytes; zlib's defaults set up ~270 KB of state for
    # every token. Level 1: 5x faster than 6, about the same size.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 10, 1)
    return compressor.compress(pixels) + compressor.flush()


def encode_token(digit: Digit, key: str = "") -> str:
    """A compact, URL-safe token carrying the (28, 28) uint8 digit."""
    pixels = np.ascontiguousarray(digit, dtype=np.uint8).tobytes()
    payload = VERSION + _compress(pixels) + _digest(pixels, key.encode())
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode_token(token: str, key: str = "") -> Digit:
    """The digit carried by a token; BadToken if it is malformed, truncated or altered."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise BadToken("The activations token is empty or too long; use the activations_url from /predict.")
    try:
        payload = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise BadToken("The activations token is not valid base64url; copy it unchanged from /predict.") from None
    if len(payload) < 1 + DIGEST_SIZE or payload[:1] != VERSION:
        raise BadToken("The activations token is truncated or from an unknown version; request a new one.")
    compressed, digest = payload[1:-DIGEST_SIZE], payload[-DIGEST_SIZE:]
    try:
        pixels = zlib.decompressobj().decompress(compressed, PIXELS + 1)
    except zlib.error:
        raise BadToken("The activations token is corrupt; copy it unchanged from /predict.") from None
    if len(pixels) != PIXELS or not hmac.compare_digest(digest, _digest(pixels, key.encode())):
        raise BadToken("The activations token failed its integrity check; it was altered or made with another key.")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(FIELD, FIELD)
