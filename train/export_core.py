"""Write the perception core of a trained agent as a core checkpoint, e.g. the env's packaged core::

    python train/export_core.py --checkpoint runs/differentiable/checkpoint.pt --out envs/pretrained/perception.pt

The result loads with ``PerceptionCore.load`` and ``gymnasium.make("MnistGlimpse-v0", perception=PATH)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from agents.checkpoint import load_agent
from agents.cli import plain_text, run_main, user_errors
from envs.perception import PRETRAINED_PATH


@dataclass
class Args:
    checkpoint: str
    """an agent checkpoint written by a train/ script (DIR/checkpoint.pt)"""
    out: str = str(PRETRAINED_PATH)
    """where the core checkpoint goes (default: the env's packaged core)"""


def main(args: Args) -> None:
    with user_errors(ValueError, FileNotFoundError):  # a --checkpoint that cannot be used
        _, core, checkpoint = load_agent(args.checkpoint)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    core.save(args.out, exported_from=args.checkpoint, agent=checkpoint["agent"], trained_args=checkpoint.get("args"))
    print(f"wrote the {checkpoint['agent']} agent's core ({core.config}) to {args.out}")


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
