"""Evaluate a saved agent on the 10,000 test images, through the environment; prints its test accuracy.

The agent acts in ``MnistGlimpseVectorEnv`` made with its own core (a pixel-choosing agent with
``obs_type="record"`` and ``action_type="pixel"``, any other on the default observation), which
gives exactly the figures of the training scripts' own evaluation (``tests/test_record.py``).

    python train/evaluate.py --checkpoint runs/best/checkpoint.pt [--sampler nearest] [--json]

Prints the test accuracy after 1, 2, 5, 10 and 25 glimpses as a small table, as the training
scripts end; ``--json`` prints the JSON instead, whose ``test_accuracy`` holds those budgets and
``accuracy_by_glimpse`` the accuracy after every glimpse 1..T. ``--seed`` seeds torch before the rollout: it only matters for a
policy that draws random numbers (the random-glimpses baseline).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

from agents.checkpoint import load_agent
from agents.cli import plain_text, refuse_retired, run_main, user_errors
from agents.evaluation import accuracy_by_glimpse
from envs.config import resolve_device
from envs.sampler import Sampler
from run import accuracy_lines, accuracy_table


@dataclass
class Args:
    checkpoint: str
    """an agent checkpoint written by a train/ script (DIR/checkpoint.pt)"""
    sampler: Literal["nearest", "bilinear", "bicubic", "gaussian"] = "nearest"
    """read-out used for evaluation (nearest = one real pixel per glimpse)"""
    max_glimpses: int | None = None
    """episode length; default: the one the agent was trained with"""
    device: str = "auto"
    """cpu, cuda or auto"""
    seed: int = 0
    """torch seed set before the rollout (only a random policy, e.g. random-glimpses, uses it)"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default, one per core); 1 does not collapse on a shared CPU"""
    json: bool = False
    """print the result as JSON (the table, and the accuracy after every glimpse) instead of the table"""


def main(args: Args) -> dict:
    """Evaluate the agent of ``args.checkpoint``, print the table (or the JSON) and return the result."""
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    with user_errors(ValueError, FileNotFoundError):  # a --checkpoint that cannot be used
        policy, core, checkpoint = load_agent(args.checkpoint, device)
    max_glimpses = args.max_glimpses or checkpoint["glimpses"]
    print(f"evaluating {checkpoint['agent']} from {args.checkpoint} on {device}", file=sys.stderr)
    torch.manual_seed(args.seed)
    accuracy = accuracy_by_glimpse(policy, core, max_glimpses, sampler=Sampler(args.sampler), device=device)
    result = {
        "agent": checkpoint["agent"],
        "test_accuracy": accuracy_table(accuracy),
        "readout": args.sampler,
        "glimpses": max_glimpses,
        "accuracy_by_glimpse": [round(float(a), 4) for a in accuracy],
        "checkpoint": args.checkpoint,
        "device": str(device),
        "seed": args.seed,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        title = f"{checkpoint['agent']}: test accuracy (%), 10,000 test images, {args.sampler} read-out"
        print("\n".join(accuracy_lines(title, result["test_accuracy"])))
    return result


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
