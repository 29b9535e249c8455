"""How long GDFS's optimizer steps take (agents.gdfs, train/gdfs.py's settings): a stage-1 step (the
predictor on random masks) and a stage-2 step (``--max-glimpses`` selections unrolled over both networks),
in wall-clock and in process CPU seconds (with one torch thread, CPU seconds are about what the step
takes on a core of its own when other jobs share the machine; the load average is recorded too).

    python benchmarks/gdfs_step_speed.py
    python benchmarks/gdfs_step_speed.py --steps 20 --device cuda --json runs/gdfs_step_speed.json
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from functools import partial

import torch
import tyro

from agents.cli import plain_text, refuse_retired, run_main
from agents.gdfs import MaskedMLP, PixelSelector, predictor_step, selector_step
from envs.config import resolve_device
from envs.data import load_mnist


@dataclass
class Args:
    steps: int = 5
    """timed stage-2 steps (after one untimed warm-up step); 10x as many stage-1 steps"""
    batch_size: int = 128
    """images per step (GDFS: 128)"""
    max_glimpses: int = 50
    """selections unrolled per stage-2 step (GDFS: 50)"""
    mlp_hidden: int = 512
    """width of both networks' hidden layers (GDFS: 512)"""
    device: str = "auto"
    """cpu, cuda or auto"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default)"""
    json: str | None = None
    """also write the result to this file"""


def timed(step, device: torch.device) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of ``step()``, CUDA synchronised."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(args: Args) -> dict:
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    data = load_mnist("train", device)
    images = data.images[: args.batch_size].flatten(1).float() / 255.0
    labels = data.labels[: args.batch_size]
    selector, predictor = PixelSelector(args.mlp_hidden).to(device), MaskedMLP(10, args.mlp_hidden).to(device)
    stage1 = torch.optim.Adam(predictor.parameters(), lr=1e-3)
    stage2 = torch.optim.Adam([*selector.parameters(), *predictor.parameters()], lr=1e-3)

    def one(stage: int) -> None:
        if stage == 1:
            predictor_step(predictor, stage1, images, labels)
        else:
            selector_step(selector, predictor, stage2, images, labels, args.max_glimpses, 1.0)

    result: dict = {
        "what": f"GDFS optimizer steps: batch {args.batch_size}, {args.max_glimpses} selections per stage-2 step, "
        f"hidden {args.mlp_hidden}, {args.torch_threads} torch thread(s)",
        "command": "python benchmarks/gdfs_step_speed.py "
        + f"--steps {args.steps} --device {args.device} --torch-threads {args.torch_threads}",
        "machine": {"device": str(device), "processor": platform.processor() or platform.machine()},
    }
    if device.type == "cuda":
        result["machine"]["gpu"] = torch.cuda.get_device_name(device)
    for stage, count in ((1, 10 * args.steps), (2, args.steps)):
        one(stage)  # warm-up
        times = [timed(partial(one, stage), device) for _ in range(count)]
        result[f"stage{stage}_step_seconds"] = {
            "wall_mean": round(sum(t[0] for t in times) / count, 4),
            "cpu_mean": round(sum(t[1] for t in times) / count, 4),
            "steps": count,
        }
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(result, indent=1) + "\n")
    return result


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--hidden": "--mlp-hidden",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
