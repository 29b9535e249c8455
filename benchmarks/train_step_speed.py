"""How fast each differentiable agent trains: optimizer steps per second of
:class:`agents.differentiable.DualOptimizerTrainer` (batch 256, 25 glimpses, the script's settings),
for the continuous attention network and for :class:`agents.pixel_attention.PixelAttention` with each
memory, gradient estimator and attention credit, and as a value head (``attention_target="value"``). The variants take turns, one step each, so every
one sees the same machine load; the ratio column is against the first variant.

    python benchmarks/train_step_speed.py
    python benchmarks/train_step_speed.py --steps 40 --device cuda
    python benchmarks/train_step_speed.py --perception runs/core16x32/perception.pt   # another core size
    python benchmarks/train_step_speed.py --profile "pixel memory, greedy credit" \
        --perception envs/pretrained/perception_shipped_agent.pt   # where the best recipe's step spends its time

A recorded run is in ``experiments/results/studies/train_step_speed.json``.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from agents.attention import AttentionNetwork
from agents.cli import UserValueError, plain_text, refuse_retired, run_main
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
    profile: str | None = None
    """a variant's name: run only its --steps steps under torch.profiler and print the operators that
    took the most time (self time), instead of timing every variant"""
    profile_rows: int = 15
    """operators in the --profile table"""
    json: Path | None = None
    """with --profile: also write the command and each listed operator's share of the self time here"""


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
    if args.profile is not None and args.profile not in VARIANTS:
        raise UserValueError(f"--profile {args.profile!r}: pick one of the variants {list(VARIANTS)}.")
    if args.json is not None and args.profile is None:
        raise UserValueError("--json writes the --profile table: give --profile VARIANT too (or leave --json out).")
    data = load_mnist("train", device)
    images, labels = data.images[: args.batch_size].float() / 255.0, data.labels[: args.batch_size]
    if args.profile is not None:
        return profile(
            make_trainer(*VARIANTS[args.profile], args.max_glimpses, args.perception, device), images, labels, args
        )
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


def profile(trainer: DualOptimizerTrainer, images: torch.Tensor, labels: torch.Tensor, args: Args) -> dict[str, float]:
    """Print torch.profiler's table of ``args.steps`` steps of one variant (after one warm-up step),
    the operators sorted by their own time; returns ``{operator: share of the total self time}``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    trainer.step(images, labels)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if images.device.type == "cuda" else [])
    with torch_profile(activities=activities) as recorded:
        for _ in range(args.steps):
            trainer.step(images, labels)
    events = recorded.key_averages()
    print(
        f"{args.profile}: {args.steps} steps, batch {args.batch_size}, {args.max_glimpses} glimpses, device "
        f"{images.device}, {torch.get_num_threads()} thread(s), core {args.perception}"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
    total = sum(event.self_cpu_time_total for event in events) or 1.0
    shares = {event.key: event.self_cpu_time_total / total for event in events}
    if args.json is not None:
        top = sorted(shares.items(), key=lambda item: -item[1])[: args.profile_rows]
        record = {
            "command": shlex.join(["python", "benchmarks/train_step_speed.py", *sys.argv[1:]]),
            "variant": args.profile,
            "steps": args.steps,
            "device": str(images.device),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "self_time_share": {name: round(share, 4) for name, share in top},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return shares


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--core": "--perception",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
