"""MNIST, shipped inside the package and verified before use.

The four standard IDX files live gzipped in ``envs/mnist/`` (package data), so a clone or an
installed wheel works offline and nothing is ever downloaded. On first use in a process each
``.gz`` is checked against its SHA-256, decompressed in memory, its contents checked against their
SHA-256 too, and parsed as IDX (big-endian header, then the ``uint8`` payload). Nothing is written
to disk and no other copy is ever read, so only verified bytes become images. Pickling a split
stores only which split it is (:meth:`MnistSplit.__reduce__`).

Caches: :func:`load_mnist` keeps each split once per process, as read from the files
(``_CPU_CACHE``) and on each device (``_DEVICE_CACHE``), ``uint8`` tensors of shape ``(N, 28, 28)``
that every environment and agent shares. They are read-only by contract: nothing in the project
writes into them (the simulator copies the images it shows into its own tensors); a user who wants
to change a split takes ``split.images.clone()``. :func:`clear_cache` empties both.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Where the packaged ``.gz`` files live.
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "mnist"

#: SHA-256 of the packaged ``.gz`` files and of their decompressed IDX contents
#: (the values listed in ``envs/mnist/README.md``).
CHECKSUMS: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

SPLITS = ("train", "test")
IMAGE_SIZE = 28
NUM_CLASSES = 10


class DataError(RuntimeError):
    """A data file is missing or does not match its checksum."""


@dataclass(frozen=True, eq=False)
class MnistSplit:
    """One split of MNIST on one device.

    :param images: ``uint8`` tensor ``(N, 28, 28)``, grey levels 0..255, row-major (row i, column j).
    :param labels: ``int64`` tensor ``(N,)``, classes 0..9.
    :param source: ``(split, data_dir)`` when loaded by :func:`load_mnist`: then pickling stores only
        that, and unpickling loads (and verifies) the split again, so a pickled environment does not
        carry the dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: tuple[str, str | None] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __reduce__(self):
        if self.source is None:
            return (MnistSplit, (self.images, self.labels))
        split, data_dir = self.source
        return (load_mnist, (split, str(self.images.device), data_dir))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _restore_hint(source_dir: Path) -> str:
    return (
        f"Restore it from a fresh clone or reinstall the package (`pip install --force-reinstall "
        f"mnist-glimpse`); the files and their checksums are listed in {PACKAGE_DATA_DIR / 'README.md'}"
        f" (looked in {source_dir})."
    )


def verify_file(source_dir: Path, name: str) -> Path:
    """Check that ``source_dir/name.gz`` exists and has the expected SHA-256.

    :param source_dir: folder holding the four ``.gz`` files.
    :param name: one of the keys of :data:`CHECKSUMS`, e.g. ``"train-images-idx3-ubyte"``.
    :return: the path of the verified ``.gz`` file.
    :raises DataError: naming the file, the expected checksum and how to restore it.
    """
    gz_path = source_dir / f"{name}.gz"
    expected = CHECKSUMS[name][0]
    if not gz_path.is_file():
        raise DataError(f"MNIST file {gz_path} is missing (expected SHA-256 {expected}). {_restore_hint(source_dir)}")
    actual = file_sha256(gz_path)
    if actual != expected:
        raise DataError(
            f"MNIST file {gz_path} is corrupt: SHA-256 {actual}, expected {expected}. {_restore_hint(source_dir)}"
        )
    return gz_path


def _read_idx(source_dir: Path, name: str) -> np.ndarray:
    """The verified contents of ``source_dir/name.gz`` as an array of the IDX file's shape."""
    gz_path = verify_file(source_dir, name)
    with gzip.open(gz_path, "rb") as handle:
        payload = handle.read()
    if hashlib.sha256(payload).hexdigest() != CHECKSUMS[name][1]:
        raise DataError(
            f"MNIST file {gz_path} decompresses to data whose SHA-256 is not {CHECKSUMS[name][1]}. "
            f"{_restore_hint(source_dir)}"
        )
    dims = payload[3]  # magic number: two zero bytes, the type code 0x08 (uint8), the number of dimensions
    shape = tuple(int.from_bytes(payload[4 + 4 * k : 8 + 4 * k], "big") for k in range(dims))
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


#: ``(split, data folder) -> MnistSplit`` on the CPU, as read (see the module's docstring).
_CPU_CACHE: dict[tuple[str, str], MnistSplit] = {}
#: ``(split, data folder, device) -> MnistSplit``: what :func:`load_mnist` returns, shared.
_DEVICE_CACHE: dict[tuple[str, str, str], MnistSplit] = {}


def clear_cache() -> None:
    """Forget every split loaded in this process (both caches): the next :func:`load_mnist` reads and
    verifies the files again."""
    _CPU_CACHE.clear()
    _DEVICE_CACHE.clear()


FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _load_cpu(split: str, source_dir: Path) -> MnistSplit:
    key = (split, str(source_dir))
    if key not in _CPU_CACHE:
        images, labels = (_read_idx(source_dir, name) for name in FILES[split])
        _CPU_CACHE[key] = MnistSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return _CPU_CACHE[key]


def load_mnist(
    split: str = "train", device: torch.device | str = "cpu", data_dir: str | os.PathLike | None = None
) -> MnistSplit:
    """Return one MNIST split on ``device``, loaded and verified once per process (the caches of the
    module's docstring: the tensors are shared, never write into them).

    :param split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    :param device: where the ``uint8`` images and ``int64`` labels live.
    :param data_dir: a folder with the four standard ``.gz`` files; default: the packaged copy.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits are {list(SPLITS)}.")
    source_dir = Path(data_dir) if data_dir is not None else PACKAGE_DATA_DIR
    device = torch.device(device)
    key = (split, str(source_dir), str(device))
    if key not in _DEVICE_CACHE:
        cpu = _load_cpu(split, source_dir)
        source = (split, None if data_dir is None else str(data_dir))
        _DEVICE_CACHE[key] = MnistSplit(cpu.images.to(device), cpu.labels.to(device), source)
    return _DEVICE_CACHE[key]


class ShuffledBatches:
    """Index batches ``(batch_size,)`` over ``range(n)``, for ever: a fresh ``torch.randperm`` (torch's
    global generator) at the start of each epoch, the last partial batch of an epoch dropped. Its
    position can be saved and restored (:meth:`state_dict`), so a resumed run draws the same batches
    as an uninterrupted one (with torch's generator state restored too)."""

    def __init__(self, n: int, batch_size: int, device: torch.device | str | None = None) -> None:
        self.n, self.batch_size, self.device = n, batch_size, device
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or self.position + self.batch_size > self.n:
            self.order, self.position = torch.randperm(self.n, device=self.device), 0
        self.position += self.batch_size
        return self.order[self.position - self.batch_size : self.position]

    def state_dict(self) -> dict[str, Any]:
        return {"order": None if self.order is None else self.order.cpu(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = state["order"]
        self.order = None if order is None else order.to(self.device)
        self.position = int(state["position"])


def shuffled_batches(
    n: int, batch_size: int, device: torch.device | str | None = None, epochs: int | None = None
) -> Iterator[torch.Tensor]:
    """Index batches ``(batch_size,)`` over ``range(n)``: a fresh ``torch.randperm`` (torch's global
    generator) at the start of each epoch, the last partial batch of an epoch dropped; ``epochs``
    passes, or forever with ``None``."""
    batches, per_epoch, drawn = ShuffledBatches(n, batch_size, device), n // batch_size, 0
    while epochs is None or drawn < epochs * per_epoch:
        yield next(batches)
        drawn += 1
