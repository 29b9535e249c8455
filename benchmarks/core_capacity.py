"""How much of a fixed set of 25 pixels the perception core can use, against a plain MLP on the same pixels.

All models see the same 25 nearest pixels of every image, a 5x5 grid (rows and columns 6, 10, ..., 22)
glimpsed in one fixed, shuffled order, and are trained on the 60,000 training images; accuracy is on
the 10,000 test images.

* ``mlp``: ``Linear(25, 256) -> ReLU -> Linear(256, 10)`` on the 25 values, position known by index:
  what those pixels allow a plain classifier.
* ``core CxB``: a fresh :class:`envs.perception.PerceptionCore` (``C`` channels, ``B`` soft bins)
  reading the glimpses one by one, ``(i, j, value)`` each, as every agent's core does; its loss is
  the perception loss over all glimpses; accuracy after 5, 10 and 25 glimpses.

The gap between the two at 25 glimpses is what the soft histogram loses on these pixels: a policy
chooses which pixels are read, not how the core reads them.

    python benchmarks/core_capacity.py                                  # about 4 minutes on 1 CPU core
    python benchmarks/core_capacity.py --cores 16x32 --epochs 6
    python benchmarks/core_capacity.py --cores 32x4 16x32 --encodings plain fourier
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro
from torch import nn

from envs.data import load_mnist, shuffled_batches
from envs.perception import PerceptionConfig, PerceptionCore, perception_loss


@dataclass
class Args:
    cores: tuple[str, ...] = ("32x4", "64x8", "16x32")
    """core sizes CHANNELSxBINS to train (32x4 is the packaged core's size)"""
    epochs: int = 2
    """passes over the training images for every model"""
    batch_size: int = 256
    """images per Adam step"""
    lr: float = 3e-3
    """Adam learning rate"""
    head_hidden: int = 256
    """hidden width of the cores' classifier heads"""
    encodings: tuple[str, ...] = ("plain",)
    """glimpse encodings to train every core size with (plain, fourier: envs.perception.GlimpseEncoding)"""
    seed: int = 0
    """seed of torch (initialisations, batch order, glimpse order)"""
    torch_threads: int = 1
    """CPU threads for torch"""


def grid_glimpses() -> torch.Tensor:
    """The 25 glimpse locations ``(25, 2)`` in pixel units, a 5x5 grid in a shuffled order."""
    grid = torch.arange(6, 23, 4).float()
    coords = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    return coords[torch.randperm(len(coords))]


def train_mlp(args: Args, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    mlp = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(mlp.parameters(), lr=args.lr)
    for batch in shuffled_batches(len(x), args.batch_size, epochs=args.epochs):
        loss = nn.functional.cross_entropy(mlp(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (mlp(x_test).argmax(-1) == y_test).float().mean().item()


def train_core(args: Args, size: str, encoding: str, coords: torch.Tensor, x, y, x_test, y_test) -> dict[int, float]:
    channels, n_bins = (int(part) for part in size.split("x"))
    core = PerceptionCore(PerceptionConfig(channels, n_bins, args.head_hidden, encoding))
    optimizer = torch.optim.Adam(core.parameters(), lr=args.lr)
    locations = coords.unsqueeze(0)
    for batch in shuffled_batches(len(x), args.batch_size, epochs=args.epochs):
        logits = core.replay(locations.expand(len(batch), -1, -1), x[batch])
        loss = perception_loss(logits, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = core.replay(locations.expand(len(x_test), -1, -1), x_test)
    return {t: (logits[t - 1].argmax(-1) == y_test).float().mean().item() for t in (5, 10, 25)}


def main(args: Args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.torch_threads)
    train, test = load_mnist("train"), load_mnist("test")
    coords = grid_glimpses()
    rows, cols = coords[:, 0].long(), coords[:, 1].long()
    x, x_test = (split.images[:, rows, cols].float() / 255.0 for split in (train, test))
    print(f"25 fixed pixels, {args.epochs} epochs, batch {args.batch_size}, Adam {args.lr}; test accuracy %")
    print("| model | 5 | 10 | 25 | seconds |\n| --- | ---: | ---: | ---: | ---: |")
    start = time.time()
    print(f"| mlp on the 25 values | | | {100 * train_mlp(args, x, train.labels, x_test, test.labels):.1f} | {time.time() - start:.0f} |")
    for size in args.cores:
        for encoding in args.encodings:
            start = time.time()
            acc = train_core(args, size, encoding, coords, x, train.labels, x_test, test.labels)
            name = f"core {size}" + ("" if encoding == "plain" else f" {encoding}")
            print(f"| {name} | {100 * acc[5]:.1f} | {100 * acc[10]:.1f} | {100 * acc[25]:.1f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
