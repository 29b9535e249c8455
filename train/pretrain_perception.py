"""Train the perception core (RecurrentSoftOrdering + classifier head) on uniformly random glimpses.

This is how the differentiable agent's warm start ``envs/pretrained/perception_random_glimpses.pt``
is made::

    python train/pretrain_perception.py --out envs/pretrained/perception_random_glimpses.pt

It also gives the "random glimpses" baseline: ``metrics.json`` holds its nearest-pixel test accuracy.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from tqdm import tqdm

from agents.baselines import RandomGlimpses
from agents.evaluation import accuracy_by_glimpse, claim_output, summary, write_metrics
from agents.pretrain import pretrain_core
from envs.config import resolve_device
from envs.data import load_mnist
from envs.perception import PerceptionConfig, PerceptionCore
from envs.sampler import Sampler


@dataclass
class Args:
    steps: int = 3000
    """optimizer steps"""
    batch_size: int = 256
    """images per step"""
    glimpses: int = 25
    """glimpses per episode (T)"""
    learning_rate: float = 3e-3
    """Adam learning rate"""
    sampler: str = "bilinear"
    """sampler used for training (evaluation always uses nearest)"""
    channels: int = 32
    """RecurrentSoftOrdering channels"""
    n_bins: int = 4
    """soft bins per channel"""
    hidden: int = 128
    """classifier head hidden width"""
    encoding: Literal["plain", "fourier", "learned", "embedding"] = "plain"
    """glimpse encoding (envs.perception.GlimpseEncoding)"""
    head_layers: int = 1
    """classifier head hidden layers"""
    dropout: float = 0.0
    """dropout after each hidden layer of the classifier head"""
    seed: int = 0
    """seed of python, numpy and torch"""
    device: str = "auto"
    """cpu, cuda or auto"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default, one per core); 1, the default, does not collapse when
    other jobs share a small CPU (docs/studies/env-throughput.md)"""
    out: str = "runs/pretrain/perception.pt"
    """where the core checkpoint goes; metrics.json is written beside it"""
    overwrite: bool = False
    """replace a finished run in --out (its metrics.json); without it such a folder is refused"""


def main(args: Args) -> None:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    # a size PerceptionConfig refuses is refused before the output folder is claimed
    config = PerceptionConfig(args.channels, args.n_bins, args.hidden, args.encoding, args.head_layers, args.dropout)
    claim_output(Path(args.out).parent, args.overwrite)

    data = load_mnist("train", device)
    core = PerceptionCore(config).to(device)
    start = time.time()
    with tqdm(total=args.steps, desc="pretrain perception") as progress:

        def report(step: int, loss: float) -> None:
            progress.update()
            if step % 50 == 0:
                progress.set_postfix(loss=f"{loss:.3f}")

        pretrain_core(
            core, data, args.steps, args.batch_size, args.glimpses, args.learning_rate, Sampler(args.sampler), report
        )
    train_seconds = time.time() - start

    out = Path(args.out)
    core.eval()
    core.save(out, trained_by="train/pretrain_perception.py", args=vars(args))
    print("evaluating on the 10,000 test images ...", flush=True)
    accuracy = accuracy_by_glimpse(RandomGlimpses(), core, args.glimpses, device=device)
    metrics = write_metrics(
        out.parent / "metrics.json", "random-glimpses", accuracy, args.sampler, train_seconds, str(device), args.seed
    )
    print(summary(metrics, out.parent, [out.name, "metrics.json"]))


if __name__ == "__main__":
    main(tyro.cli(Args))
