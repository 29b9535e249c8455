"""Regenerate the environment's general core from nothing, in one command::

    python train/general_core.py                                # every stage, into runs/general-core-chain
    python train/general_core.py --dry-run                      # print the stages' commands only
    python train/general_core.py --stages fixed-sequence best   # some stages (e.g. one command per CPU core)

The core reads a mixture of glimpse sets (:data:`agents.pretrain.GENERAL_SOURCES`), one of which is
the glimpses of trained agents of every family on the training images. Those agents need a core to
train on, so the recipe has three steps, each stage one ``train/`` script's own command:

1. ``core-1``: a first general core, whose agent glimpses are the shipped agent's alone
   (``train/pretrain_perception.py --preset general``);
2. eleven agents: the learned fixed sequence and the best recipe (each trains its own core), and
   short runs of the RL scripts on ``core-1``, three seeds each: REINFORCE with 256 episodes a batch
   and with 16, and PPO;
3. ``core``: the general preset again, its trajectories source split among the shipped agent and
   the eleven (training image ``k`` read by agent ``k mod 12``), 16,000 steps, ending on the weights
   of the best held-out loss (``--patience`` longer than the run: no early stop).

Every stage writes its own folder under ``--out``. A stage whose folder holds a finished run
(``metrics.json``) is skipped, and an interrupted one starts again (from its ``resume.pt`` where the
script can continue), so the same command continues an interrupted chain. No stage has a wall-clock
limit and every flag a stage depends on is spelled out, so on one machine and torch version the
same command gives the same weights whatever the scripts' defaults become. The last line compares
the new core with the packaged one (``envs/pretrained/perception.pt``).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from agents.cli import INTERRUPTED_STATUS, UserError, UserValueError, plain_text, run_main
from envs.perception import PRETRAINED_PATH, PerceptionCore

TRAIN = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Stage:
    """One training run of the chain: ``python train/SCRIPT FLAGS --out OUT/FOLDER``."""

    name: str
    """the stage's folder under --out, and its name for --stages"""
    script: str
    """the train/ script that runs it"""
    flags: tuple[str, ...]
    """its flags, without --out (``{out}`` stands for the chain's --out)"""
    needs: tuple[str, ...] = ()
    """the stages whose results it reads"""
    resumable: bool = True
    """the script can continue an interrupted run (``--resume``)"""
    output: str = ""
    """the file its --out names inside its folder ("": the folder itself)"""

    def folder(self, out: Path) -> Path:
        return out / self.name

    def out_flag(self, out: Path) -> str:
        return str(self.folder(out) / self.output) if self.output else str(self.folder(out))

    def finished(self, out: Path) -> bool:
        return (self.folder(out) / "metrics.json").is_file()

    def command(self, out: Path, common: tuple[str, ...]) -> list[str]:
        """The stage's command line; ``--resume`` when an interrupted run left its resume file."""
        flags = [flag.replace("{out}", str(out)) for flag in self.flags]
        resume = ["--resume"] if self.resumable and (self.folder(out) / "resume.pt").is_file() else []
        return [sys.executable, str(TRAIN / self.script), *flags, *common, *resume, "--out", self.out_flag(out)]


CORE_1 = "{out}/core-1/perception.pt"
_SHORT_RL = ("--total-steps", "200000", "--perception", CORE_1)

#: The recipe, in the order the stages run. The RL flags name every setting the short defaults had
#: when the recipe was fixed, so that a change of a script's defaults leaves the chain as it is.
STAGES: tuple[Stage, ...] = (
    Stage(
        "core-1",
        "pretrain_perception.py",
        ("--preset", "general", "--max-seconds", "0"),
        resumable=False,
        output="perception.pt",
    ),
    Stage("fixed-sequence", "differentiable.py", ("--preset", "fixed-sequence", "--seed", "0")),
    Stage("best", "differentiable.py", ("--preset", "best", "--seed", "0", "--curve-images", "2000")),
    *(
        Stage(
            f"reinforce-s{seed}",
            "reinforce.py",
            (
                *_SHORT_RL,
                "--seed",
                str(seed),
                "--num-envs",
                "256",
                "--learning-rate",
                "1e-3",
                "--step-bias-init",
                "uniform",
            ),
            needs=("core-1",),
        )
        for seed in (0, 1, 2)
    ),
    *(
        Stage(
            f"reinforce-n16-s{seed}",
            "reinforce.py",
            (
                *_SHORT_RL,
                "--seed",
                str(seed),
                "--num-envs",
                "16",
                "--learning-rate",
                "3e-3",
                "--step-bias-init",
                "uniform",
            ),
            needs=("core-1",),
        )
        for seed in (0, 1, 2)
    ),
    *(
        Stage(
            f"ppo-s{seed}",
            "ppo.py",
            (
                *_SHORT_RL,
                "--seed",
                str(seed),
                "--num-envs",
                "256",
                "--learning-rate",
                "3e-4",
                "--step-offsets-init",
                "uniform",
                "--no-progress-bar",
            ),
            needs=("core-1",),
        )
        for seed in (0, 1, 2)
    ),
)
AGENTS = tuple(stage.name for stage in STAGES[1:])
STAGES += (
    Stage(
        "core",
        "pretrain_perception.py",
        (
            "--preset", "general", "--steps", "16000", "--patience", "1000", "--max-seconds", "0",
            "--lr-decay", "constant",
            "--trajectory-agents", "shipped", *(f"{{out}}/{name}/checkpoint.pt" for name in AGENTS),
        ),
        needs=AGENTS,
        resumable=False,
        output="perception.pt",
    ),
)  # fmt: skip
STAGE_NAMES = tuple(stage.name for stage in STAGES)


@dataclass
class Args:
    out: str = "runs/general-core-chain"
    """the chain's folder: one folder per stage, the core in OUT/core/perception.pt"""
    stages: tuple[str, ...] = STAGE_NAMES
    """the stages to run, in the chain's order (those finished are skipped)"""
    device: str = "cpu"
    """every stage's --device (the packaged core was made on the CPU; cuda is faster and gives other weights)"""
    torch_threads: int = 1
    """every stage's --torch-threads"""
    dry_run: bool = False
    """print each stage's command and state, run nothing"""
    check: Literal["packaged", "none"] = "packaged"
    """at the end, compare the new core's weights with the packaged core's"""


def plan(args: Args) -> list[Stage]:
    """The stages to run, in order; refuses unknown names and stages whose inputs will not exist."""
    unknown = sorted(set(args.stages) - set(STAGE_NAMES))
    if unknown:
        raise UserValueError(f"--stages {unknown}: unknown; the stages are {list(STAGE_NAMES)}.")
    out = Path(args.out)
    chosen = [stage for stage in STAGES if stage.name in args.stages]
    for stage in chosen:
        missing = [
            need
            for need in stage.needs
            if need not in args.stages and not next(s for s in STAGES if s.name == need).finished(out)
        ]
        if missing and not stage.finished(out):
            raise UserValueError(
                f"stage {stage.name} reads {missing}, which are neither finished in {out} nor in --stages: "
                f"add them to --stages (or run them first)."
            )
    return chosen


def same_weights(a: PerceptionCore, b: PerceptionCore) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def main(args: Args) -> None:
    stages = plan(args)
    out = Path(args.out)
    common = ("--device", args.device, "--torch-threads", str(args.torch_threads))
    for stage in stages:
        command = stage.command(out, common)
        state = "finished, skipped" if stage.finished(out) else "to run"
        shown = ["python", f"train/{stage.script}", *command[2:]]
        print(f"[{stage.name}] {state}: {shlex.join(shown)}", flush=True)
        if args.dry_run or stage.finished(out):
            continue
        status = subprocess.run(command).returncode
        if status == INTERRUPTED_STATUS:
            sys.exit(INTERRUPTED_STATUS)
        if status != 0:
            raise UserError(
                f"stage {stage.name} failed (exit status {status}); see its output above, then run the same "
                "command again to continue the chain from that stage."
            )
    core_file = STAGES[-1].folder(out) / STAGES[-1].output
    if args.dry_run or args.check == "none" or not core_file.is_file():
        return
    same = same_weights(PerceptionCore.load(core_file), PerceptionCore.load(PRETRAINED_PATH))
    verdict = "the same weights as" if same else "other weights than"
    print(f"{core_file}: {verdict} the packaged core {PRETRAINED_PATH}")


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
