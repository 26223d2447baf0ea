"""Source data sets, read from local files only (never downloaded).

MNIST / Fashion-MNIST are read from idx files, CIFAR-10 from its python pickles
(through an unpickler that builds arrays and plain data only: no code runs), in the
layouts torchvision leaves on disk, with numpy alone. Features stay in the
source's own units (pixel counts 0..255 or 0..16): the models scale their input
(`stream.normalize`), so a served model takes the data as users have it.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from clflow.errors import StreamError

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass(frozen=True)
class RawData:
    """A labelled data set with its official (or stratified) train / test split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    shape: tuple[int, ...]


def load_digits(test_size: float, seed: int) -> RawData:
    """scikit-learn's bundled 8x8 digits (raw 0..16 pixel counts), split stratified."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    X, y = sk_digits(return_X_y=True)
    X = X.astype(np.float32)  # raw: models scale their input (stream.normalize)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    return RawData(Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64), DIGIT_NAMES, (1, 8, 8))


MNIST1D_SAMPLES = (
    8000  # the size used by the MNIST-1D paper's benchmarks (4000 per class pair in a 5 x 2 split)
)


def load_mnist1d(test_size: float, n_samples: int = MNIST1D_SAMPLES) -> RawData:
    """MNIST-1D (Greydanus, 2020), generated from the `mnist1d` package's templates: 40 features.

    `make_dataset` builds it offline with the package's fixed seed (42), so every run
    gets the same data; its `get_dataset` would download a pickle and is never called.
    It seeds numpy's global generator, which is restored afterwards. The arrays are
    kept for the process (a caller gets its own copies): generating takes 3 to 7 s, and
    a benchmark or a test session builds the same streams many times.
    """
    X, y, X_test, y_test = (a.copy() for a in _generate_mnist1d(test_size, n_samples))
    return RawData(X, y, X_test, y_test, DIGIT_NAMES, (1, X.shape[1]))


@lru_cache(maxsize=4)
def _generate_mnist1d(test_size: float, n_samples: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split = n_samples, 1.0 - test_size
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    arrays = (
        np.asarray(d["x"], dtype=np.float32),
        np.asarray(d["y"], dtype=np.int64),
        np.asarray(d["x_test"], dtype=np.float32),
        np.asarray(d["y_test"], dtype=np.int64),
    )
    for a in arrays:
        a.flags.writeable = False  # the kept copy: nobody writes to it
    return arrays


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise StreamError(f"cannot read idx file ({exc.strerror or exc})", file=path) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise StreamError("not an unsigned-byte idx file (bad magic number)", file=path)
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise StreamError(f"truncated: header says {dims}, found {body.size} values", file=path)
    return body.reshape(dims)


def _find(root: Path, names: list[str], stem: str) -> Path:
    for sub in names:
        for suffix in ("", ".gz"):
            cand = root / sub / f"{stem}{suffix}"
            if cand.exists():
                return cand
    raise StreamError(
        f"'{stem}' not found (looked in {', '.join(names)}); clflow never downloads data",
        file=root,
        field="stream.path",
    )


# where Debian's `dataset-fashion-mnist` package puts the four gzipped idx files
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"


def load_idx_dataset(root: str | Path, fashion: bool) -> RawData:
    """MNIST or Fashion-MNIST from a torchvision-format directory (or the raw files themselves).

    Fashion-MNIST with `root` "" is read where Debian's `dataset-fashion-mnist` installs it.
    """
    if fashion and not str(root):
        root = FASHION_MNIST_DEBIAN
        if not (root / "train-images-idx3-ubyte.gz").exists():
            raise StreamError(
                f"Fashion-MNIST is not installed: run `{FASHION_MNIST_INSTALL}` "
                "or set stream.path to a directory holding its idx files",
                file=root,
                field="stream.path",
            )
    root = Path(root)
    if not root.is_dir():
        raise StreamError(
            "directory not found; clflow never downloads data", file=root, field="stream.path"
        )
    subdirs = [".", "raw", "FashionMNIST/raw" if fashion else "MNIST/raw"]
    arrays = [
        read_idx(_find(root, subdirs, stem))
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ]
    Xtr, ytr, Xte, yte = arrays
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)  # noqa: E731  (raw 0..255)
    return RawData(
        flat(Xtr),
        ytr.astype(np.int64),
        flat(Xte),
        yte.astype(np.int64),
        FASHION_NAMES if fashion else DIGIT_NAMES,
        (1, 28, 28),
    )


# The only globals a CIFAR-10 batch refers to: numpy's array reconstruction (numpy 1 and 2 names),
# and the bytes of a protocol-2 pickle written by Python 3 (codecs.encode of a str, runs no code)
ARRAY_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class ArraysOnly(pickle.Unpickler):
    """An unpickler that builds arrays, lists, dicts, bytes and numbers, and refuses any other
    global before it is looked up: a crafted file under `stream.path` cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.exists():
        raise StreamError(
            "file not found; clflow never downloads data", file=path, field="stream.path"
        )
    try:
        with open(path, "rb") as fh:
            found = ArraysOnly(fh, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise StreamError(
            f"not a CIFAR batch: it {exc} (only arrays, lists, bytes and numbers are read; "
            "nothing in it was run)",
            file=path,
        ) from None
    except Exception as exc:
        raise StreamError(f"not a CIFAR pickle ({type(exc).__name__})", file=path) from None
    if not isinstance(found, dict):
        raise StreamError(f"not a CIFAR batch: a {type(found).__name__}, not a dict", file=path)
    return found


def load_cifar10(root: str | Path) -> RawData:
    """CIFAR-10 from its python pickle batches (`cifar-10-batches-py`)."""
    root = Path(root)
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    if not base.is_dir():
        raise StreamError(
            "directory not found; clflow never downloads data", file=root, field="stream.path"
        )

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        d = _unpickle(base / name)
        X = np.asarray(d[b"data"], dtype=np.uint8)
        return X.astype(np.float32), np.asarray(d[b"labels"], dtype=np.int64)  # raw 0..255

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    Xte, yte = batch("test_batch")
    meta = _unpickle(base / "batches.meta")
    names = [n.decode() for n in meta[b"label_names"]]
    return RawData(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        Xte,
        yte,
        names,
        (3, 32, 32),
    )
