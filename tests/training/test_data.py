from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SAMPLE_DIR
from training import data
from training.data import ChecksumError, CorruptFileError, MissingFileError, MnistError, load_mnist, parse_idx


def idx_bytes(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_reads_shape_and_values() -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "bad magic"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "bad magic"),
        (b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x01" + b"\x05", "unsupported IDX element type 0x0d"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x05" + b"\x01\x02", "truncated: 10 bytes"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x01\x02", "has trailing data"),
    ],
)
def test_parse_idx_refuses_malformed_content(content: bytes, message: str) -> None:
    with pytest.raises(CorruptFileError, match=message):
        parse_idx(content)


def test_sample_loads_with_the_notebook_split(mnist_sample: data.Mnist) -> None:
    assert (len(mnist_sample.train), len(mnist_sample.validation), len(mnist_sample.test)) == (500, 100, 300)
    assert mnist_sample.test.images.shape == (300, 28, 28)
    assert mnist_sample.test.images.dtype == np.uint8
    assert set(np.unique(mnist_sample.test.labels)) == set(range(10))


def test_sample_is_refused_as_mnist_when_verifying() -> None:
    with pytest.raises(ChecksumError, match="not canonical MNIST"):
        load_mnist(SAMPLE_DIR)


def test_missing_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"train-images-idx3-ubyte\(\.gz\) not found.*download"):
        load_mnist(tmp_path)


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    assert data.resolve_data_dir(None) == tmp_path


def test_plain_and_gzipped_files_read_alike(tmp_path: Path, mnist_sample: data.Mnist) -> None:
    for path in SAMPLE_DIR.glob("*.gz"):
        (tmp_path / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    plain = load_mnist(tmp_path, verify=False, validation_size=100)
    np.testing.assert_array_equal(plain.test.images, mnist_sample.test.images)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    for path in SAMPLE_DIR.glob("*.gz"):
        shutil.copy(path, tmp_path)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        load_mnist(tmp_path, verify=False)


def test_images_and_labels_must_agree(tmp_path: Path) -> None:
    for path in SAMPLE_DIR.glob("*.gz"):
        shutil.copy(path, tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(CorruptFileError, match="do not match"):
        load_mnist(tmp_path, verify=False)


# Download, against a server on 127.0.0.1 that serves files from a folder.


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "mirror"
    root.mkdir()
    handler = partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sample_checksums(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make the sample the canonical content for the duration of a test."""
    sums = {p.stem: hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest() for p in SAMPLE_DIR.glob("*.gz")}
    monkeypatch.setattr(data, "CHECKSUMS", sums)
    return sums


def test_download_fetches_and_verifies(
    mirror: tuple[str, Path], sample_checksums: dict[str, str], tmp_path: Path
) -> None:
    url, root = mirror
    for path in SAMPLE_DIR.glob("*.gz"):
        shutil.copy(path, root)
    files = data.download(tmp_path / "out", mirrors=[url], progress=False)
    assert sorted(f.name for f in files) == sorted(f"{name}.gz" for name in sample_checksums)
    assert len(load_mnist(tmp_path / "out", validation_size=100).test) == 300


def test_download_falls_back_to_the_next_mirror(
    mirror: tuple[str, Path], sample_checksums: dict[str, str], tmp_path: Path
) -> None:
    url, root = mirror
    for path in SAMPLE_DIR.glob("*.gz"):
        shutil.copy(path, root)
    dead = "http://127.0.0.1:9/"  # the discard port: connection refused
    files = data.download(tmp_path / "out", mirrors=[dead, url], retries=1, progress=False)
    assert len(files) == 4


def test_download_rejects_bad_content_and_leaves_nothing(
    mirror: tuple[str, Path], sample_checksums: dict[str, str], tmp_path: Path
) -> None:
    url, root = mirror
    for path in SAMPLE_DIR.glob("*.gz"):
        (root / path.name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(MnistError, match="checksum mismatch"):
        data.download(tmp_path / "out", mirrors=[url], retries=2, backoff_s=0.01, progress=False)
    assert list((tmp_path / "out").iterdir()) == []
