"""Dataset registry and resolution (mirror -> Keras cache -> download), IDX reading, loaders,
the seeded split and atomic archive extraction."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from shared import data
from shared.data import (
    REGISTRY,
    DataError,
    extract_archive,
    fetch,
    file_hash,
    load_image_dataset,
    read_idx,
    train_val_split,
)
from shared.errors import UserError


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """An empty Keras cache for this test only."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """An empty mirror folder, for this test only."""
    path = tmp_path / "mirror"
    path.mkdir()
    monkeypatch.setenv("KSUITE_DATA_DIR", str(path))
    return path


# -- fetch ----------------------------------------------------------------------------------


def test_fetch_copies_from_mirror_into_keras_cache(mirror, fresh_home, monkeypatch):
    spec = REGISTRY["mnist/test-labels"].mirror
    path = fetch("mnist/test-labels")
    assert path == fresh_home / "datasets" / "mnist-t10k-labels-idx1-ubyte.gz"
    assert file_hash(path, "md5") == spec.hash == "ec29112dd5afa0611ce80d1b7f02629c"
    assert path.read_bytes() == (mirror / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    # now cached: found again with no mirror at all
    monkeypatch.delenv("KSUITE_DATA_DIR")
    assert fetch("mnist/test-labels") == path


def test_registry_matches_the_mirror(mirror):
    checked = 0
    for key, ds in REGISTRY.items():
        if ds.mirror is None:
            continue
        path = mirror / ds.mirror.in_mirror
        if path.exists():
            assert file_hash(path, ds.mirror.algorithm) == ds.mirror.hash, key
            checked += 1
    assert checked >= 13  # MNIST x4, Fashion-MNIST x4, mnist.npz, cifar10, aclImdb, text...


def test_missing_file_offline_names_file_and_variable(fake_mirror, fresh_home, monkeypatch):
    monkeypatch.setenv("KSUITE_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        fetch("mnist/test-labels")
    msg = str(info.value)
    assert "mnist/t10k-labels-idx1-ubyte.gz" in msg
    assert "KSUITE_DATA_DIR" in msg and str(fake_mirror) in msg
    assert "KSUITE_OFFLINE" in msg
    assert not (fresh_home / "datasets" / "mnist-t10k-labels-idx1-ubyte.gz").exists()
    assert isinstance(info.value, UserError)  # entry points print it as one line


def test_missing_mirror_only_file_names_file_and_variable(fresh_home, monkeypatch):
    monkeypatch.delenv("KSUITE_DATA_DIR")
    with pytest.raises(DataError, match="corpus_gutenberg.txt.gz.*KSUITE_DATA_DIR is not set"):
        fetch("corpus_gutenberg")


def test_unknown_key():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        fetch("nope")
    with pytest.raises(DataError):
        load_image_dataset("cifar100", "idx")
    with pytest.raises(DataError, match="unknown source"):
        load_image_dataset("mnist", "png")
    with pytest.raises(DataError, match="no .npz"):
        load_image_dataset("fashion_mnist", "npz")


def test_corrupted_mirror_file_is_refused(fake_mirror, fresh_home):
    bad = fake_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"not the MNIST labels")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        fetch("mnist/test-labels")
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert "ec29112dd5afa0611ce80d1b7f02629c" in str(info.value)
    # no bad copy left in the cache
    assert not (fresh_home / "datasets" / "mnist-t10k-labels-idx1-ubyte.gz").exists()


def test_corrupted_mirror_file_checked_by_suite_sha1(fake_mirror, fresh_home):
    (fake_mirror / "text8.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="checksum mismatch.*sha1"):
        fetch("text8")
    assert not (fresh_home / "datasets" / "text8.zip").exists()


def test_corrupted_cache_file_is_replaced_from_mirror(mirror, fresh_home):
    cached = fresh_home / "datasets" / "mnist-t10k-labels-idx1-ubyte.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    path = fetch("mnist/test-labels")
    assert path == cached
    assert file_hash(path, "md5") == "ec29112dd5afa0611ce80d1b7f02629c"


def test_corrupted_cache_file_is_never_returned(fake_mirror, fresh_home, monkeypatch):
    monkeypatch.setenv("KSUITE_OFFLINE", "1")
    cached = fresh_home / "datasets" / "mnist-t10k-labels-idx1-ubyte.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(DataError, match="not found"):
        fetch("mnist/test-labels")


# -- IDX -------------------------------------------------------------------------------------


def test_read_idx_mnist_t10k(mirror):
    labels = read_idx(fetch("mnist/test-labels"))
    images = read_idx(fetch("mnist/test-images"))
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]
    assert images.max() == 255 and images.min() == 0


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_read_idx_plain_gzip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr))
    with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
        f.write(idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), arr)
    (tmp_path / "short.idx").write_bytes(idx_bytes(arr)[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "float.idx").write_bytes(struct.pack(">HBB", 0, 0x0D, 1) + b"\0" * 8)
    with pytest.raises(DataError, match="unsigned-byte"):
        read_idx(tmp_path / "float.idx")


def test_mnist_idx_and_npz_are_identical(mirror):
    (xi, yi), (xti, yti) = load_image_dataset("mnist", "idx")
    (xn, yn), (xtn, ytn) = load_image_dataset("mnist", "npz")
    assert xi.shape == (60000, 28, 28) and yi.shape == (60000,)
    assert xti.shape == (10000, 28, 28) and yti.shape == (10000,)
    for a, b in ((xi, xn), (yi, yn), (xti, xtn), (yti, ytn)):
        assert a.dtype == b.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    (xa, _), _ = load_image_dataset("mnist")  # auto: the IDX files
    np.testing.assert_array_equal(xa, xi)


def test_fashion_mnist_loads(mirror):
    (x, y), (xt, yt) = load_image_dataset("fashion_mnist")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert x.dtype == y.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10
    assert yt[:3].tolist() == [9, 2, 1]


# -- train_val_split ----------------------------------------------------------------------


def test_train_val_split_seeded_and_disjoint():
    x = np.arange(100) * 10
    y = np.arange(100)
    (xtr, ytr), (xva, yva) = train_val_split(x, y, 20, seed=3)
    assert len(xva) == 20 and len(xtr) == 80
    np.testing.assert_array_equal(xtr, ytr * 10)  # pairs stay aligned
    np.testing.assert_array_equal(xva, yva * 10)
    assert set(ytr).isdisjoint(yva) and set(ytr) | set(yva) == set(range(100))
    (_, _), (xva2, _) = train_val_split(x, y, 20, seed=3)
    np.testing.assert_array_equal(xva, xva2)
    (_, _), (xva3, _) = train_val_split(x, y, 20, seed=4)
    assert not np.array_equal(xva, xva3)
    for bad in (0, 100, -1):
        with pytest.raises(UserError):
            train_val_split(x, y, bad, seed=0)


# -- extract_archive ---------------------------------------------------------------------


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_extract_archive_atomic_and_idempotent(tmp_path):
    archive = make_tar(tmp_path / "pkg.tar.gz",
                       {"pkg/a.txt": b"alpha", "pkg/sub/b.txt": b"beta"})
    out = extract_archive(archive, "pkg")
    assert out == tmp_path / "pkg"
    assert (out / "a.txt").read_bytes() == b"alpha"
    assert (out / "sub" / "b.txt").read_bytes() == b"beta"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "pkg.tar.gz"]  # no temp dir
    # idempotent: a second call returns the existing folder and extracts nothing
    (out / "a.txt").write_bytes(b"changed")
    archive.unlink()
    assert extract_archive(archive, "pkg") == out
    assert (out / "a.txt").read_bytes() == b"changed"


def test_extract_archive_without_top_folder_leaves_nothing(tmp_path):
    archive = make_tar(tmp_path / "flat.tar.gz", {"other/a.txt": b"x"})
    with pytest.raises(DataError, match="top-level folder pkg/"):
        extract_archive(archive, "pkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.tar.gz"]


def test_extract_archive_refuses_unsafe_members(tmp_path):
    archive = make_tar(tmp_path / "evil.tar.gz", {"pkg/ok.txt": b"x", "../escape.txt": b"y"})
    with pytest.raises(tarfile.TarError):
        extract_archive(archive, "pkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]
    assert not (tmp_path.parent / "escape.txt").exists()


def test_keras_home_is_not_the_users(keras_home):
    assert data.keras_home() == keras_home
    assert keras_home != Path.home() / ".keras"
