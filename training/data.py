"""MNIST as the notebook used it: the four IDX files, checked, split 55k/5k/10k.

Errors form one small tree so that the CLI can print a one-line reason:

    MnistError
    ├── MissingFileError     a file is not in the data directory
    ├── CorruptFileError     bad magic number, wrong dimensions, truncated or trailing data
    └── ChecksumError        the content is not the canonical MNIST content
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA_DIR_ENV = "MNIST_DIR"
VALIDATION_SIZE = 5_000

# SHA-256 of each file's *uncompressed* content, so gzipped and plain copies verify alike.
CHECKSUMS: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


class MnistError(Exception):
    """Base class for every data problem; the message says what to fix."""


class MissingFileError(MnistError):
    pass


class CorruptFileError(MnistError):
    pass


class ChecksumError(MnistError):
    pass


@dataclass(frozen=True)
class Split:
    images: npt.NDArray[np.uint8]  # (N, 28, 28), white digit on black
    labels: npt.NDArray[np.uint8]  # (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Mnist:
    train: Split
    validation: Split
    test: Split
    checksums: dict[str, str]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The directory given, else $MNIST_DIR, else ./data/mnist."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data/mnist")


def find_file(data_dir: Path, name: str) -> Path:
    """The gzipped or plain copy of an MNIST file in data_dir."""
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"{name}(.gz) not found in {data_dir}; run `python -m training download --data-dir {data_dir}`"
        f" or point --data-dir / ${DATA_DIR_ENV} at a directory holding the four MNIST files"
    )


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed if it is gzipped."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise CorruptFileError(f"{path}: gzip stream is truncated or corrupt ({exc})") from exc


def parse_idx(content: bytes, *, source: str = "IDX data") -> npt.NDArray[np.uint8]:
    """Decode an IDX byte string into an array of its declared shape."""
    if len(content) < 4 or content[0:2] != b"\x00\x00":
        raise CorruptFileError(f"{source}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(content[2])
    if dtype is None:
        raise CorruptFileError(f"{source}: unsupported IDX element type 0x{content[2]:02x}")
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise CorruptFileError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(content) != expected:
        kind = "truncated" if len(content) < expected else "has trailing data"
        raise CorruptFileError(f"{source}: {kind}: {len(content)} bytes, shape {shape} needs {expected}")
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)


def read_verified(data_dir: Path, name: str, *, verify: bool = True) -> tuple[npt.NDArray[np.uint8], str]:
    """One MNIST file as an array, with the SHA-256 of its content."""
    path = find_file(data_dir, name)
    content = read_bytes(path)
    digest = hashlib.sha256(content).hexdigest()
    if verify and digest != CHECKSUMS[name]:
        array = parse_idx(content, source=str(path))  # a structural problem says more than a hash
        raise ChecksumError(
            f"{path}: content checksum {digest[:12]}… is not canonical MNIST "
            f"({CHECKSUMS[name][:12]}…); shape {array.shape}"
        )
    return parse_idx(content, source=str(path)), digest


def load_split(data_dir: Path, prefix: str, *, verify: bool) -> tuple[Split, dict[str, str]]:
    images, images_sha = read_verified(data_dir, f"{prefix}-images-idx3-ubyte", verify=verify)
    labels, labels_sha = read_verified(data_dir, f"{prefix}-labels-idx1-ubyte", verify=verify)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CorruptFileError(f"{data_dir}/{prefix}: images {images.shape} and labels {labels.shape} do not match")
    checksums = {f"{prefix}-images-idx3-ubyte": images_sha, f"{prefix}-labels-idx1-ubyte": labels_sha}
    return Split(images, labels), checksums


def load_mnist(
    data_dir: str | Path | None = None, *, verify: bool = True, validation_size: int = VALIDATION_SIZE
) -> Mnist:
    """The notebook's splits: train 55k, validation 5k (the first 5k of the training file), test 10k."""
    directory = resolve_data_dir(data_dir)
    full_train, train_sums = load_split(directory, "train", verify=verify)
    test, test_sums = load_split(directory, "t10k", verify=verify)
    n_val = validation_size
    validation = Split(full_train.images[:n_val], full_train.labels[:n_val])
    train = Split(full_train.images[n_val:], full_train.labels[n_val:])
    return Mnist(train=train, validation=validation, test=test, checksums=train_sums | test_sums)


def download(
    data_dir: str | Path,
    *,
    mirrors: Sequence[str] = MIRRORS,
    retries: int = 3,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> list[Path]:
    """Fetch the four gzipped files into data_dir, trying each mirror in turn; verified, atomic."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fetched = []
    for name in CHECKSUMS:
        target = directory / f"{name}.gz"
        if target.is_file() and _content_sha256(target) == CHECKSUMS[name]:
            fetched.append(target)
            continue
        fetched.append(_fetch_from_mirrors(name, target, mirrors, retries, backoff_s, progress))
    return fetched


def _fetch_from_mirrors(
    name: str, target: Path, mirrors: Sequence[str], retries: int, backoff_s: float, progress: bool
) -> Path:
    errors = []
    for attempt in range(retries):
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                _fetch(url, target, progress=progress)
            except (OSError, ChecksumError, CorruptFileError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            return target
        if attempt + 1 < retries:
            time.sleep(backoff_s * 2**attempt)
    raise MnistError(f"could not download {name} after {retries} rounds:\n  " + "\n  ".join(errors))


def _fetch(url: str, target: Path, *, progress: bool) -> None:
    from tqdm import tqdm  # training-only dependency

    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp,
            tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar,
        ):
            while chunk := response.read(1 << 16):
                tmp.write(chunk)
                bar.update(len(chunk))
    partial = Path(tmp.name)
    try:
        digest = _content_sha256(partial)
        if digest != CHECKSUMS[target.name.removesuffix(".gz")]:
            raise ChecksumError(f"checksum mismatch ({digest[:12]}…)")
        shutil.move(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _content_sha256(path: Path) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()
