"""How much of a set of 25 pixels the perception core can use, against a plain MLP on the same pixels.

All models see the same 25 nearest pixels of every image and are trained on the 60,000 training
images; accuracy is on the 10,000 test images. The pixels are

* by default a 5x5 grid (rows and columns 6, 10, ..., 22) glimpsed in one fixed, shuffled order;
* with ``--agent DIR/checkpoint.pt``, the pixels a trained agent chooses, image by image, reading
  with ``nearest`` as in evaluation (its glimpse locations are kept as they are, off-centre too).

Models:

* ``mlp``: what those pixels allow a plain classifier, ``Linear(n, 256) -> ReLU -> Linear(256, 10)``.
  On the grid it reads the 25 values (position known by index); on an agent's pixels, which differ
  from image to image, it reads the masked image and the mask (``n = 2 * 784``, GDFS's classifier
  input), one MLP per budget (5, 10, 25 glimpses).
* ``core CxB``: a fresh :class:`envs.perception.PerceptionCore` (``C`` channels, ``B`` soft bins)
  reading the glimpses one by one, ``(i, j, value)`` each, as every agent's core does; its loss is
  the perception loss over all glimpses; accuracy after 5, 10 and 25 glimpses.
* with ``--agent``, also ``agent's own core``: the agent's test accuracy, for reference.

The gap between the MLP and the cores at 25 glimpses is what the soft histogram loses on these
pixels: a policy chooses which pixels are read, not how the core reads them.

    python experiments/core_capacity.py
    python experiments/core_capacity.py --cores 16x32 --epochs 6
    python experiments/core_capacity.py --cores 32x4 16x32 --encodings plain fourier
    python experiments/core_capacity.py --agent runs/differentiable/checkpoint.pt --cores 32x4

The results: docs/studies/core-on-fixed-pixels.md for the grid and docs/studies/pixels-vs-core.md for
agents' pixels (``core_on_fixed_pixels.json`` and ``pixels_vs_core.json`` in experiments/results/studies/).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro
from torch import nn

from agents.checkpoint import load_agent
from agents.cli import plain_text, run_main, user_errors
from agents.evaluation import agent_glimpses
from envs.data import IMAGE_SIZE, load_mnist, shuffled_batches
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
    agent: str | None = None
    """an agent checkpoint (DIR/checkpoint.pt): use the pixels its policy chooses instead of the grid"""
    seed: int = 0
    """seed of torch (initialisations, batch order, glimpse order)"""
    torch_threads: int = 1
    """CPU threads for torch"""


def grid_glimpses() -> torch.Tensor:
    """The 25 glimpse locations ``(25, 2)`` in pixel units, a 5x5 grid in a shuffled order."""
    grid = torch.arange(6, 23, 4).float()
    coords = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    return coords[torch.randperm(len(coords))]


def masked_images(coords: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``(N, 2 * 784)``: the image with only the glimpsed pixels kept, and the mask of those pixels.

    ``coords`` ``(N, t, 2)`` are rounded to the pixel the ``nearest`` read-out reads.
    """
    index = coords.round().long()
    flat = index[..., 0] * IMAGE_SIZE + index[..., 1]  # (N, t)
    image = torch.zeros(len(coords), IMAGE_SIZE * IMAGE_SIZE).scatter_(1, flat, values)
    mask = torch.zeros_like(image).scatter_(1, flat, 1.0)
    return torch.cat([image, mask], dim=1)


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


def train_core(args: Args, size: str, encoding: str, coords, x, y, coords_test, x_test, y_test) -> dict[int, float]:
    """A fresh core replaying glimpses ``coords`` ``(N, T, 2)``, ``x`` ``(N, T)``; test accuracy by budget."""
    channels, n_bins = (int(part) for part in size.split("x"))
    core = PerceptionCore(PerceptionConfig(channels, n_bins, args.head_hidden, encoding))
    optimizer = torch.optim.Adam(core.parameters(), lr=args.lr)
    for batch in shuffled_batches(len(x), args.batch_size, epochs=args.epochs):
        logits = core.replay(coords[batch], x[batch])
        loss = perception_loss(logits, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = core.replay(coords_test, x_test)
    return {t: (logits[t - 1].argmax(-1) == y_test).float().mean().item() for t in (5, 10, 25)}


def main(args: Args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.torch_threads)
    train, test = load_mnist("train"), load_mnist("test")
    start = time.time()
    pixels = "25 fixed pixels" if args.agent is None else f"the pixels {args.agent} reads"
    print(f"{pixels}, {args.epochs} epochs, batch {args.batch_size}, Adam {args.lr}; test accuracy %")
    print("| model | 5 | 10 | 25 | seconds |\n| --- | ---: | ---: | ---: | ---: |")
    if args.agent is None:
        coords = grid_glimpses()
        rows, cols = coords[:, 0].long(), coords[:, 1].long()
        x, x_test = (split.images[:, rows, cols].float() / 255.0 for split in (train, test))
        coords, coords_test = coords.expand(len(x), -1, -1), coords.expand(len(x_test), -1, -1)
        mlp = {25: train_mlp(args, x, train.labels, x_test, test.labels)}
    else:
        with user_errors(ValueError, FileNotFoundError):  # an --agent that cannot be used
            policy, agent_core, checkpoint = load_agent(args.agent)
        (coords, x), (coords_test, x_test) = (
            agent_glimpses(policy, agent_core, checkpoint["glimpses"], split.images) for split in (train, test)
        )
        with torch.no_grad():
            logits = agent_core.replay(coords_test, x_test)
        own = {t: (logits[t - 1].argmax(-1) == test.labels).float().mean().item() for t in (5, 10, 25)}
        print(f"| agent's own core | {100 * own[5]:.1f} | {100 * own[10]:.1f} | {100 * own[25]:.1f} | |")
        start = time.time()
        mlp = {
            t: train_mlp(
                args,
                masked_images(coords[:, :t], x[:, :t]),
                train.labels,
                masked_images(coords_test[:, :t], x_test[:, :t]),
                test.labels,
            )
            for t in (5, 10, 25)
        }
    cells = " | ".join(f"{100 * mlp[t]:.1f}" if t in mlp else "" for t in (5, 10, 25))
    print(f"| mlp on the pixels | {cells} | {time.time() - start:.0f} |")
    for size in args.cores:
        for encoding in args.encodings:
            start = time.time()
            acc = train_core(args, size, encoding, coords, x, train.labels, coords_test, x_test, test.labels)
            name = f"core {size}" + ("" if encoding == "plain" else f" {encoding}")
            print(
                f"| {name} | {100 * acc[5]:.1f} | {100 * acc[10]:.1f} | {100 * acc[25]:.1f} | {time.time() - start:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
