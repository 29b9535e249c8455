"""envs.data: the packaged MNIST is the real MNIST, verified, and failures are actionable."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil

import pytest
import torch

from envs import data
from envs.data import CHECKSUMS, PACKAGE_DATA_DIR, DataError, load_mnist

# The facts listed in envs/mnist/README.md.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TEST_FIRST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
MD5_RAW = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.mark.parametrize(
    ("split", "size", "counts", "first"),
    [("train", 60_000, TRAIN_COUNTS, TRAIN_FIRST), ("test", 10_000, TEST_COUNTS, TEST_FIRST)],
)
def test_split_matches_readme_facts(split, size, counts, first):
    mnist = load_mnist(split)
    assert len(mnist) == size
    assert mnist.images.shape == (size, 28, 28)
    assert mnist.images.dtype == torch.uint8
    assert mnist.images.is_contiguous()
    assert mnist.labels.shape == (size,)
    assert mnist.labels.dtype == torch.int64
    assert mnist.images.device.type == "cpu"
    assert torch.bincount(mnist.labels, minlength=10).tolist() == counts
    assert sum(counts) == size
    assert mnist.labels[:10].tolist() == first
    assert int(mnist.images.min()) == 0 and int(mnist.images.max()) == 255


def test_train_pixel_mean_and_std():
    images = load_mnist("train").images
    # exact statistics from the grey-level histogram, in float64
    counts = torch.bincount(images.flatten(), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum()
    mean = (counts * levels).sum() / total
    std = ((counts * (levels - mean) ** 2).sum() / total).sqrt()
    assert total == 60_000 * 28 * 28
    assert round(float(mean), 4) == 0.1307
    assert round(float(std), 4) == 0.3081


def test_loaded_once_per_process_and_device():
    assert load_mnist("test") is load_mnist("test", torch.device("cpu"))
    assert load_mnist("test", "cpu").images is load_mnist("test").images


def test_checksums_are_those_of_the_readme():
    readme = (PACKAGE_DATA_DIR / "README.md").read_text()
    for name, (gz_sha, raw_sha) in CHECKSUMS.items():
        assert re.search(rf"^\s*{gz_sha}\s+{re.escape(name)}\.gz\s*$", readme, re.M), name
        assert re.search(rf"^\s*{raw_sha}\s+{re.escape(name)}\s*$", readme, re.M), name
        assert re.search(rf"^\s*{MD5_RAW[name]}\s+{re.escape(name)}\s*$", readme, re.M), name


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_packaged_files_have_the_published_checksums(name):
    gz_path = PACKAGE_DATA_DIR / f"{name}.gz"
    assert data.verify_file(PACKAGE_DATA_DIR, name) == gz_path
    assert hashlib.sha256(gz_path.read_bytes()).hexdigest() == CHECKSUMS[name][0]
    with gzip.open(gz_path, "rb") as handle:
        payload = handle.read()
    assert hashlib.sha256(payload).hexdigest() == CHECKSUMS[name][1]
    assert hashlib.md5(payload).hexdigest() == MD5_RAW[name]  # the widely published MNIST values
    magic = int.from_bytes(payload[:4], "big")
    assert magic == (2051 if "images" in name else 2049)


def test_unknown_split_raises_value_error():
    with pytest.raises(ValueError, match="valid splits") as error:
        load_mnist("validation")
    assert "'train'" in str(error.value) and "'test'" in str(error.value)


def test_a_pickled_split_or_env_does_not_carry_the_dataset():
    """Pickling stores which split it is; unpickling loads (and verifies) it again."""
    import pickle

    import gymnasium

    import envs  # noqa: F401 - registers the env

    split = load_mnist("test")
    assert len(pickle.dumps(split)) < 1000 and pickle.loads(pickle.dumps(split)) is split
    env = gymnasium.make("MnistGlimpse-v0", split="test")
    env.reset(seed=0)
    assert len(pickle.dumps(env)) < 2_000_000  # the core's weights and the episode, not 10,000 images


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of the four ``.gz`` files."""
    source = tmp_path / "mnist"
    source.mkdir()
    for name in CHECKSUMS:
        shutil.copy(PACKAGE_DATA_DIR / f"{name}.gz", source)
    return source


def test_copy_loads_and_equals_packaged_without_writing_anything(data_copy, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    copy = load_mnist("test", data_dir=data_copy)
    packaged = load_mnist("test")
    assert copy is not packaged
    assert torch.equal(copy.images, packaged.images)
    assert torch.equal(copy.labels, packaged.labels)
    assert sorted(tmp_path.rglob("*")) == before  # decompressed in memory only


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_corrupt_file_raises_data_error_naming_file_and_checksum(data_copy, name):
    target = data_copy / f"{name}.gz"
    payload = bytearray(target.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    target.write_bytes(bytes(payload))
    with pytest.raises(DataError) as error:
        load_mnist("train" if name.startswith("train") else "test", data_dir=data_copy)  # each split reads its 2 files
    message = str(error.value)
    assert str(target) in message
    assert CHECKSUMS[name][0] in message  # the expected SHA-256 of the .gz
    assert hashlib.sha256(bytes(payload)).hexdigest() in message  # and the one found
    assert "corrupt" in message
    assert "README.md" in message  # where to find the files and checksums


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_missing_file_raises_data_error_naming_file_and_checksum(data_copy, name):
    target = data_copy / f"{name}.gz"
    target.unlink()
    with pytest.raises(DataError) as error:
        load_mnist("train" if name.startswith("train") else "test", data_dir=data_copy)  # each split reads its 2 files
    message = str(error.value)
    assert str(target) in message
    assert CHECKSUMS[name][0] in message
    assert "missing" in message
    assert "reinstall" in message


def test_data_error_is_not_cached(data_copy):
    target = data_copy / "t10k-images-idx3-ubyte.gz"
    target.unlink()
    with pytest.raises(DataError):
        load_mnist("test", data_dir=data_copy)
    shutil.copy(PACKAGE_DATA_DIR / "t10k-images-idx3-ubyte.gz", target)
    assert torch.equal(load_mnist("test", data_dir=data_copy).images, load_mnist("test").images)


def test_shuffled_batches_cover_each_epoch_once_and_drop_the_partial_batch():
    from envs.data import shuffled_batches

    torch.manual_seed(0)
    batches = list(shuffled_batches(10, 3, epochs=2))
    assert len(batches) == 6 and all(b.shape == (3,) for b in batches)
    for epoch in (batches[:3], batches[3:]):
        seen = torch.cat(epoch)
        assert len(set(seen.tolist())) == 9 and seen.max() < 10  # 9 distinct indices, the 10th dropped
    torch.manual_seed(0)
    forever = shuffled_batches(10, 3)
    assert all(torch.equal(next(forever), b) for b in batches)  # same draws, and it keeps going
    assert next(forever).shape == (3,)
