"""How fast each differentiable agent trains: optimizer steps per second of
:class:`agents.differentiable.DualOptimizerTrainer` (batch 256, 25 glimpses, the script's settings),
for the continuous attention network and for :class:`agents.pixel_attention.PixelAttention` with each
memory, gradient estimator and attention credit, and as a value head (``attention_target="value"``). The variants take turns, one step each, so every
one sees the same machine load; the ratio column is against the first variant.

    python benchmarks/train_step_speed.py
    python benchmarks/train_step_speed.py --steps 40 --device cuda
    python benchmarks/train_step_speed.py --perception runs/core16x32/perception.pt   # another core size

A recorded run is in ``experiments/results/studies/train_step_speed.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from agents.attention import AttentionNetwork
from agents.cli import plain_text, refuse_retired, run_main
from agents.differentiable import DualOptimizerTrainer
from agents.pixel_attention import PixelAttention
from envs.config import resolve_device
from envs.data import load_mnist
from envs.perception import RANDOM_GLIMPSES_PATH, PerceptionCore
from envs.sampler import Sampler

#: name -> (policy, PixelAttention memory, pixel estimator, attention credit, attention target)
VARIANTS: dict[str, tuple[str, str, str, str, str]] = {
    "attention": ("attention", "none", "mixture", "episode", "label"),
    "pixel": ("pixel", "none", "mixture", "episode", "label"),
    "pixel, estimator taken": ("pixel", "none", "taken", "episode", "label"),
    "pixel memory": ("pixel", "pixels", "mixture", "episode", "label"),
    "pixel memory, estimator taken": ("pixel", "pixels", "taken", "episode", "label"),
    "pixel memory, greedy credit": ("pixel", "pixels", "mixture", "greedy", "label"),
    "pixel memory, greedy credit, value target": ("pixel", "pixels", "mixture", "greedy", "value"),
}


@dataclass
class Args:
    steps: int = 10
    """timed optimizer steps per variant (after one untimed warm-up step each)"""
    batch_size: int = 256
    """images per step (train/differentiable.py's default)"""
    max_glimpses: int = 25
    """glimpses per episode"""
    device: str = "auto"
    """cpu, cuda or auto"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default)"""
    seed: int = 0
    """seed of torch"""
    perception: Path = RANDOM_GLIMPSES_PATH
    """the perception-core checkpoint every variant starts from (default: the packaged warm start;
    train/pretrain_perception.py --out PATH writes others)"""


def make_trainer(
    policy_kind: str,
    memory: str,
    estimator: str,
    credit: str,
    target: str,
    max_glimpses: int,
    core_path: Path,
    device: torch.device,
) -> DualOptimizerTrainer:
    """The trainer train/differentiable.py builds for this variant (its default learning rates)."""
    core = PerceptionCore.load(core_path, device).train()
    if policy_kind == "attention":
        policy = AttentionNetwork(core.observation_size, 128, max_glimpses, True).to(device)
    else:
        exploration = "epsilon" if target == "value" else "gumbel"
        policy = PixelAttention(core.observation_size, max_glimpses, 128, memory=memory, exploration=exploration).to(
            device
        )
    return DualOptimizerTrainer(
        policy,
        core,
        Sampler("bilinear"),
        max_glimpses,
        attention_target=target,
        pixel_estimator=estimator,
        attention_credit=credit,
    )


def main(args: Args) -> dict[str, float]:
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    data = load_mnist("train", device)
    images, labels = data.images[: args.batch_size].float() / 255.0, data.labels[: args.batch_size]
    trainers = {
        name: make_trainer(*variant, args.max_glimpses, args.perception, device) for name, variant in VARIANTS.items()
    }
    seconds = dict.fromkeys(trainers, 0.0)
    for step in range(args.steps + 1):  # step 0 warms up
        for name, trainer in trainers.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            trainer.step(images, labels)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name] += (time.perf_counter() - start) if step else 0.0
    rates = {name: args.steps / total for name, total in seconds.items()}
    first = next(iter(rates.values()))
    print(
        f"DualOptimizerTrainer.step, batch {args.batch_size}, {args.max_glimpses} glimpses, {args.steps} steps each, "
        f"device {device}, {torch.get_num_threads()} thread(s), core {args.perception}"
    )
    print("| variant | steps/s | time per step vs attention |\n|---|--:|--:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} | {first / rate:.2f}x |")
    return rates


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--core": "--perception",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
