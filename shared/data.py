"""Dataset registry and resolution: offline mirror -> Keras cache -> download.

Every dataset file the suite reads is named here once, with its upstream origin and checksum.
`fetch(name)` returns a local path to a verified copy:

1. the offline mirror: if ``KSUITE_DATA_DIR`` names a folder holding the file (laid out as
   ``../shared/data``), Keras' own ``get_file`` copies it into the cache from a ``file://`` origin,
   verifying the checksum on the way -- the same code path as a real download;
2. the Keras cache under ``KERAS_HOME`` (``~/.keras`` by default): used when already there and
   its checksum matches;
3. the upstream origin, downloaded by ``get_file`` with its progress bar.

A file that none of the three can provide is one clear :class:`DataError` naming the file and the
variable to set. ``KSUITE_OFFLINE=1`` skips step 3 (tests set it so they never touch the network).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tarfile
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import UserError

MIRROR_ENV = "KSUITE_DATA_DIR"
OFFLINE_ENV = "KSUITE_OFFLINE"


class DataError(UserError):
    """A dataset file could not be found, fetched or verified."""


@dataclass(frozen=True)
class FileSpec:
    """One concrete file: where it sits in the mirror / cache and how to check it."""

    name: str  # file name in the Keras cache (and, by default, in the mirror)
    hash: str
    algorithm: str  # "sha256", "md5" or "sha1"
    origin: str | None = None  # upstream URL; None when the file exists only in the mirror
    mirror_path: str | None = None  # path relative to KSUITE_DATA_DIR (default: name)

    @property
    def in_mirror(self) -> str:
        return self.mirror_path or self.name


@dataclass(frozen=True)
class Dataset:
    """A registry entry: the mirror file and/or the online file (their contents may be packaged
    differently, e.g. CIFAR-10's mirror .tar.xz vs the official .tar.gz; loaders handle both)."""

    key: str
    description: str
    mirror: FileSpec | None
    online: FileSpec | None
    cache_subdir: str = "datasets"


_CIFAR_ONLINE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_IMDB_ONLINE = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
_MNIST_IDX = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def _idx(key: str, folder: str, fname: str, md5: str, origin_base: str) -> Dataset:
    spec = FileSpec(
        name=f"{folder}-{fname}",
        hash=md5,
        algorithm="md5",
        origin=origin_base + fname,
        mirror_path=f"{folder}/{fname}",
    )
    return Dataset(key, f"{folder} {fname} (IDX, gzip)", spec, spec)


def _registry() -> dict[str, Dataset]:
    entries = [
        Dataset(
            "mnist.npz",
            "MNIST as packaged by Keras (keras.datasets.mnist)",
            mirror=FileSpec(
                "mnist.npz",
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                "sha256",
            ),
            online=FileSpec(
                "mnist.npz",
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                "sha256",
                "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
            ),
        ),
        _idx("mnist/train-images", "mnist", "train-images-idx3-ubyte.gz",
             "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_IDX),
        _idx("mnist/train-labels", "mnist", "train-labels-idx1-ubyte.gz",
             "d53e105ee54ea40749a09fcbcd1e9432", _MNIST_IDX),
        _idx("mnist/test-images", "mnist", "t10k-images-idx3-ubyte.gz",
             "9fb629c4189551a2d022fa330f9573f3", _MNIST_IDX),
        _idx("mnist/test-labels", "mnist", "t10k-labels-idx1-ubyte.gz",
             "ec29112dd5afa0611ce80d1b7f02629c", _MNIST_IDX),
        _idx("fashion_mnist/train-images", "fashion-mnist", "train-images-idx3-ubyte.gz",
             "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _FASHION + "fashion-mnist/"),
        _idx("fashion_mnist/train-labels", "fashion-mnist", "train-labels-idx1-ubyte.gz",
             "25c81989df183df01b3e8a0aad5dffbe", _FASHION + "fashion-mnist/"),
        _idx("fashion_mnist/test-images", "fashion-mnist", "t10k-images-idx3-ubyte.gz",
             "bef4ecab320f06d8554ea6380940ec79", _FASHION + "fashion-mnist/"),
        _idx("fashion_mnist/test-labels", "fashion-mnist", "t10k-labels-idx1-ubyte.gz",
             "bb300cfdad3c16e7a12a480ee83cd310", _FASHION + "fashion-mnist/"),
        Dataset(
            "cifar10",
            "CIFAR-10 python batches (Krizhevsky 2009)",
            mirror=FileSpec(
                "cifar-10-batches-py.tar.xz",
                "28e5c9197376021767012de34e2524c656350b520430b9a900df85e87cdfbd6f",
                "sha256",
            ),
            # Keras' own cifar10.load_data() checksum for the official archive.
            online=FileSpec(
                "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                "sha256",
                _CIFAR_ONLINE,
            ),
        ),
        Dataset(
            "aclImdb",
            "Large Movie Review Dataset v1.0, raw text (Maas et al. 2011)",
            mirror=FileSpec(
                "aclImdb.tar.gz",
                "4277ff658804a7eb508315286066b4ee7efbe7dc86cc8bf5c2f6d63229437046",
                "sha256",
            ),
            online=FileSpec(
                "aclImdb_v1.tar.gz", "7c2ac02c03563afcf9b574c7e56c153a", "md5", _IMDB_ONLINE
            ),
        ),
        Dataset(
            "shakespeare.txt",
            "tiny-shakespeare (Karpathy, char-rnn)",
            mirror=FileSpec(
                "shakespeare.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                "sha256",
                mirror_path="tinyshakespeare.txt",
            ),
            online=FileSpec(
                "shakespeare.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                "sha256",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                "tinyshakespeare/input.txt",
            ),
        ),
        Dataset(
            "corpus_gutenberg",
            "158 public-domain Project Gutenberg books, ~10.1M words (offline stand-in for text8)",
            mirror=FileSpec(
                "corpus_gutenberg.txt.gz",
                "bc8818c3e8419111806b1ef494d92a8d1f280cadbe893d197b31c8c07071ef85",
                "sha256",
            ),
            online=None,
        ),
        Dataset(
            "text8",
            "text8: first 1e8 bytes of English Wikipedia, cleaned (Mahoney)",
            mirror=FileSpec("text8.zip", "6c70299b93b7e1f927b42cd8f6ac1a31547c7a2e", "sha1"),
            online=FileSpec(
                "text8.zip",
                "6c70299b93b7e1f927b42cd8f6ac1a31547c7a2e",
                "sha1",
                "http://mattmahoney.net/dc/text8.zip",
            ),
        ),
        Dataset(
            "vgg16_notop",
            "VGG16 ImageNet weights without the classifier (keras.applications)",
            mirror=FileSpec(
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "6d6bbae143d832006294945121d1f1fc",
                "md5",
            ),
            online=FileSpec(
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "6d6bbae143d832006294945121d1f1fc",
                "md5",
                "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            ),
            cache_subdir="models",
        ),
    ]
    return {d.key: d for d in entries}


REGISTRY: dict[str, Dataset] = _registry()


def mirror_dir() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()


def file_hash(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | Path, spec: FileSpec) -> None:
    got = file_hash(path, spec.algorithm)
    if got != spec.hash:
        raise DataError(
            f"checksum mismatch for {path}: {spec.algorithm} {got}, expected {spec.hash} "
            "(corrupt or different file; delete it and try again)"
        )


def _get_file(spec: FileSpec, origin: str, cache_subdir: str) -> Path:
    """Keras' own get_file: cache lookup, checksum, progress bar. Keras verifies sha256/md5
    itself; other algorithms (text8's published sha1) are checked here afterwards."""
    from keras.utils import get_file

    keras_algo = spec.algorithm if spec.algorithm in ("sha256", "md5") else None
    cached = keras_home() / cache_subdir / spec.name
    refused = DataError(
        f"checksum mismatch for {spec.name} from {origin}: expected {spec.algorithm} {spec.hash} "
        "(corrupt or different file; replace it with the original and try again)"
    )
    try:
        path = get_file(
            fname=spec.name,
            origin=origin,
            file_hash=spec.hash if keras_algo else None,
            hash_algorithm=keras_algo or "auto",
            cache_subdir=cache_subdir,
            cache_dir=str(keras_home()),
        )
    except ValueError as exc:  # get_file's "Incomplete or corrupted file detected"
        if "hash" not in str(exc):
            raise
        cached.unlink(missing_ok=True)  # never leave a bad copy in the cache
        raise refused from None
    if keras_algo is None and file_hash(path, spec.algorithm) != spec.hash:
        Path(path).unlink(missing_ok=True)
        raise refused
    return Path(path)


def _cached(spec: FileSpec, cache_subdir: str) -> Path | None:
    path = keras_home() / cache_subdir / spec.name
    if path.exists() and file_hash(path, spec.algorithm) == spec.hash:
        return path
    return None


def fetch(key: str) -> Path:
    """Return a local, checksum-verified path for registry entry ``key``.

    Several processes (the workers of a multi-worker job, parallel tests) may fetch the same
    file into the same cache at once; Keras' get_file writes in place, so the cache entry is
    guarded by an advisory file lock and the second process finds the verified copy."""
    if key not in REGISTRY:
        raise DataError(f"unknown dataset {key!r}; known: {', '.join(sorted(REGISTRY))}")
    ds = REGISTRY[key]
    import fcntl

    lock_dir = keras_home() / ds.cache_subdir
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f".ksuite-{key.replace('/', '-')}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _fetch(ds)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(ds: Dataset) -> Path:
    mirror = mirror_dir()
    # 1. offline mirror, through get_file with a file:// origin.
    if mirror is not None and ds.mirror is not None:
        candidate = mirror / ds.mirror.in_mirror
        if candidate.exists():
            cached = _cached(ds.mirror, ds.cache_subdir)
            if cached:
                return cached
            return _get_file(ds.mirror, candidate.resolve().as_uri(), ds.cache_subdir)
    # 2. Keras cache (either packaging).
    for spec in (ds.mirror, ds.online):
        if spec is not None:
            cached = _cached(spec, ds.cache_subdir)
            if cached:
                return cached
    # 3. download.
    wanted = ds.mirror.in_mirror if ds.mirror else ds.online.name  # type: ignore[union-attr]
    where = f"{MIRROR_ENV}={mirror}" if mirror else f"{MIRROR_ENV} is not set"
    if ds.online is None or ds.online.origin is None:
        raise DataError(
            f"{wanted} not found ({where}; not in the Keras cache "
            f"{keras_home() / ds.cache_subdir}) "
            f"and it has no download origin: set {MIRROR_ENV} to a folder holding {wanted}"
        )
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataError(
            f"{wanted} not found ({where}; not in the Keras cache) and {OFFLINE_ENV} forbids "
            f"downloading {ds.online.origin}: set {MIRROR_ENV} to a folder holding {wanted}"
        )
    try:
        return _get_file(ds.online, ds.online.origin, ds.cache_subdir)
    except (urllib.error.URLError, OSError, Exception) as exc:  # get_file wraps errors
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"{wanted} not found ({where}; not in the Keras cache) and downloading "
            f"{ds.online.origin} failed ({type(exc).__name__}: {exc}); set {MIRROR_ENV} to a "
            f"folder holding {wanted}"
        ) from None


def extract_archive(archive: Path, marker: str) -> Path:
    """Extract a tar archive next to itself once, atomically (extract into a temporary sibling,
    then rename), and return the extracted folder ``<cache dir>/<marker>``."""
    target = archive.parent / marker
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{marker}.", dir=archive.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = tmp / marker
        if not src.exists():
            raise DataError(f"{archive} does not contain a top-level folder {marker}/")
        try:
            os.rename(src, target)
        except OSError:
            if not target.exists():  # lost a race with another process: fine; else re-raise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# Image datasets in IDX format (MNIST, Fashion-MNIST) and Keras' mnist.npz
# --------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file as LeCun et al. define it: magic 0x0000 dtype ndim, then sizes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} values")
    return arr.reshape(shape)


def load_idx_dataset(
    name: str,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(x_train, y_train), (x_test, y_test) as uint8 for ``mnist`` or ``fashion_mnist``."""
    if name not in ("mnist", "fashion_mnist"):
        raise DataError(f"unknown IDX dataset {name!r}")
    parts = [read_idx(fetch(f"{name}/{p}")) for p in
             ("train-images", "train-labels", "test-images", "test-labels")]
    return (parts[0], parts[1]), (parts[2], parts[3])


def load_mnist_npz() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    with np.load(fetch("mnist.npz")) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def load_image_dataset(name: str, source: str = "auto"):
    """MNIST / Fashion-MNIST as uint8 arrays. ``source``: ``idx`` (the IDX gzip files), ``npz``
    (Keras' mnist.npz, MNIST only) or ``auto`` (IDX when the mirror has them, else mnist.npz)."""
    if source not in ("auto", "idx", "npz"):
        raise DataError(f"unknown source {source!r}; use auto, idx or npz")
    if name == "mnist" and source == "npz":
        return load_mnist_npz()
    if name == "mnist" and source == "auto":
        try:
            return load_idx_dataset("mnist")
        except DataError:
            return load_mnist_npz()
    if source == "npz":
        raise DataError(f"{name} has no .npz packaging; use --data-source idx")
    return load_idx_dataset(name)


def train_val_split(x, y, val_size: int, seed: int):
    """Hold out ``val_size`` training examples chosen by a seeded permutation."""
    if not 0 < val_size < len(x):
        raise UserError(f"validation size {val_size} must be between 1 and {len(x) - 1}")
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, va = perm[val_size:], perm[:val_size]
    return (x[tr], y[tr]), (x[va], y[va])


def split_or_keep_all(x, y, val_size: int, seed: int):
    """``train_val_split``, or with ``val_size`` 0 every example in training and an empty
    validation part (a fixed recipe that trains on all the data: Algorithm 7.2)."""
    if val_size:
        return train_val_split(x, y, val_size, seed)
    return (x, y), (x[:0], y[:0])


# --------------------------------------------------------------------------------------------
# CIFAR-10 python batches (the mirror's .tar.xz or the official .tar.gz; both hold the folder)
# --------------------------------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
# md5 of each file of the official cifar-10-python.tar.gz (torchvision's list; SOURCES.md).
CIFAR10_MD5 = {
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def verify_cifar10(folder: str | Path) -> None:
    """Check every batch file against the official md5; one clear error naming the file."""
    folder = Path(folder)
    for name, md5 in CIFAR10_MD5.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 batch file {path} is missing (delete {folder} and retry)")
        got = file_hash(path, "md5")
        if got != md5:
            raise DataError(f"CIFAR-10 batch file {path} has md5 {got}, expected {md5} "
                            f"(corrupt or different file; delete {folder} and retry)")


def cifar10_folder() -> Path:
    """The verified ``cifar-10-batches-py`` folder (fetched and extracted on first use)."""
    folder = extract_archive(fetch("cifar10"), CIFAR10_FOLDER)
    verify_cifar10(folder)
    return folder


def read_cifar10(folder: str | Path):
    """(x_train, y_train), (x_test, y_test) as uint8 NHWC images and uint8 labels, read with
    Keras' own ``load_batch`` (the reader ``keras.datasets.cifar10.load_data`` uses; Keras 3
    keeps it under ``keras.src``)."""
    from keras.src.datasets.cifar import load_batch

    folder = Path(folder)
    parts = [load_batch(str(folder / f"data_batch_{i}")) for i in range(1, 6)]
    x_train = np.concatenate([x for x, _ in parts]).transpose(0, 2, 3, 1)  # NCHW -> NHWC
    y_train = np.concatenate([y for _, y in parts]).astype("uint8")
    x_test, y_test = load_batch(str(folder / "test_batch"))
    return (x_train, y_train), (x_test.transpose(0, 2, 3, 1), np.asarray(y_test, "uint8"))


def load_cifar10():
    """CIFAR-10 as uint8 NHWC arrays: (x_train, y_train), (x_test, y_test), md5-verified."""
    return read_cifar10(cifar10_folder())
