"""Train a perception core (RecurrentSoftOrdering + classifier head) before any agent uses it.

Two presets::

    python train/pretrain_perception.py --preset general --out runs/general-core/perception.pt
    python train/pretrain_perception.py --out envs/pretrained/perception_random_glimpses.pt

* ``general``: the environment's packaged core (``envs/pretrained/perception.pt``, copied there from
  ``--out``): a 16x32 ``learned`` core trained in set form on a mixture of glimpse sets
  (:data:`agents.pretrain.GENERAL_SOURCES`: random continuous glimpses read with ``bilinear`` and with
  ``nearest``, random pixel subsets of 1..``--length`` and the shipped agent's trajectories on the
  training images; GDFS's random masks, ``--sources ... uniform-masks``, and sets that settle on a few
  places, ``--sources ... repeats``, are ablations), with the last ``--val-images`` training images held out for
  early stopping (:func:`agents.pretrain.pretrain_core_general`), so that it reads well whichever
  policy chose the glimpses.
* ``random-glimpses`` (the default): ``T`` uniformly random glimpses one after the other, read with
  ``--sampler`` (:func:`agents.pretrain.pretrain_core`): the differentiable agent's warm start
  ``envs/pretrained/perception_random_glimpses.pt`` and the "random glimpses" baseline of the comparison.

``metrics.json`` beside the core holds its ``nearest`` test accuracy under uniformly random glimpses.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from tqdm import tqdm

from agents.baselines import RandomGlimpses
from agents.checkpoint import load_agent
from agents.cli import UserValueError, parse_preset_args, refuse_retired, run_main, user_errors
from agents.evaluation import accuracy_by_glimpse, agent_glimpses
from agents.pretrain import GENERAL_SOURCES, GeneralValidation, pretrain_core, pretrain_core_general
from agents.shipped import load_shipped_agent
from envs.data import MnistSplit, load_mnist
from envs.perception import PerceptionConfig, PerceptionCore
from envs.sampler import Sampler
from run import RunArgs, claim_output, end_stage, say, start, summary, write_metrics

Recipe = tyro.conf.Suppress  # a field that only a preset sets (no flag)


@dataclass
class Args(RunArgs):
    preset: Recipe[str] = "random-glimpses"
    """the preset these values came from (recorded in the core file and metrics.json)"""
    steps: int = 3000
    """optimizer steps (general: at most; early stopping may end sooner)"""
    batch_size: int = 256
    """images per step (general: split evenly among the sources)"""
    max_glimpses: int = 25
    """glimpses per episode (T): the random-glimpses recipe's episode, and the general recipe's
    trajectory length and accuracy budget"""
    learning_rate: float = 3e-3
    """Adam learning rate"""
    sampler: str = "bilinear"
    """random-glimpses: the sampler used for training (evaluation always uses nearest)"""
    sources: tuple[str, ...] = ()
    """general: the glimpse sets of the mixture, each with an equal share of every batch (agents.pretrain.GENERAL_SOURCES)"""
    length: int = 50
    """general: glimpses per random set; every prefix of 1..length is scored"""
    trajectory_agents: tuple[str, ...] = ("shipped",)
    """general: the agents whose glimpses on the training images make the trajectories source, image k
    read by agent k mod A ("shipped": the shipped agent; else a train/ script's checkpoint.pt with its
    own core, episodes of --max-glimpses)"""
    val_images: int = 10_000
    """general: the last training images, held out for validation and early stopping"""
    eval_every: int = 250
    """general: steps between validations"""
    patience: int = 4
    """general: validations without a new best loss before training stops (the best weights are kept)"""
    max_seconds: float = 0.0
    """general: stop after this many seconds of wall clock (0 = no limit)"""
    lr_decay: Literal["constant", "cosine"] = "constant"
    """general: the learning rate's schedule: constant, or half a cosine down to zero at --steps"""
    channels: int = 32
    """RecurrentSoftOrdering channels"""
    n_bins: int = 4
    """soft bins per channel"""
    head_hidden: int = 128
    """classifier head hidden width"""
    encoding: Literal["plain", "fourier", "learned", "embedding"] = "plain"
    """glimpse encoding (envs.perception.GlimpseEncoding)"""
    head_layers: int = 1
    """classifier head hidden layers"""
    dropout: float = 0.0
    """dropout after each hidden layer of the classifier head"""
    out: str = "runs/pretrain/perception.pt"
    """where the core checkpoint goes; metrics.json is written beside it"""


#: name -> (what it is, the values it sets)
PRESETS: dict[str, tuple[str, dict]] = {
    "random-glimpses": ("T uniformly random glimpses, read one after the other with --sampler", {}),
    "general": (
        "the packaged core: a 16x32 learned core, in set form, on every kind of glimpse set (early stopping)",
        dict(
            steps=20_000,
            sources=("continuous-bilinear", "continuous-nearest", "pixels", "trajectories"),
            channels=16,
            n_bins=32,
            encoding="learned",
            max_seconds=2400.0,
        ),
    ),
}


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--hidden": "--head-hidden",
}


def parse_args(argv: list[str] | None = None) -> Args:
    """``--preset NAME`` (default ``random-glimpses``) picks the defaults; the other flags change them."""
    return parse_preset_args(Args, PRESETS, "random-glimpses", __doc__, refuse_retired(RETIRED, argv))


def check_args(args: Args) -> None:
    """Refuse, before any work, options the preset would ignore and unknown sources."""
    if args.preset == "general":
        unknown = sorted(set(args.sources) - set(GENERAL_SOURCES))
        if unknown or not args.sources:
            raise UserValueError(f"--sources {unknown or '(none)'}: pick among {list(GENERAL_SOURCES)}.")
        if args.sampler != "bilinear":
            raise UserValueError(
                "--sampler is an option of --preset random-glimpses; the general preset reads with both."
            )
    elif args.sources or args.lr_decay != "constant":
        raise UserValueError("--sources and --lr-decay are options of --preset general.")
    if args.max_seconds < 0 or args.val_images < 1:
        raise UserValueError(
            f"--max-seconds must be >= 0 and --val-images >= 1; got {args.max_seconds}, {args.val_images}."
        )


def loss_reporter(progress: tqdm) -> Callable[[int, float], None]:
    """The ``report(step, loss)`` of a pretraining: one step on ``progress``, the loss shown every 50."""

    def report(step: int, loss: float) -> None:
        progress.update()
        if step % 50 == 0:
            progress.set_postfix(loss=f"{loss:.3f}")

    return report


def agents_glimpses(
    agents: Sequence[str], max_glimpses: int, images: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The glimpses of ``agents`` on ``images`` (image ``k`` read by agent ``k mod A``, ``nearest``):
    ``coords`` ``(N, T, 2)``, ``values`` ``(N, T)``.

    :param agents: ``"shipped"`` or a ``checkpoint.pt`` path each.
    :raises UserValueError: no agents, or a checkpoint that cannot be used (named with the fix).
    """
    if not agents:
        raise UserValueError("--trajectory-agents is empty; name at least one agent (shipped, or a checkpoint.pt).")
    coords = torch.zeros(len(images), max_glimpses, 2, device=device)
    values = torch.zeros(len(images), max_glimpses, device=device)
    for k, agent in enumerate(agents):
        print(f"the glimpses of {agent} on the training images ...", flush=True)
        with user_errors(ValueError, FileNotFoundError):
            policy, agent_core, _ = load_shipped_agent(device) if agent == "shipped" else load_agent(agent, device)
        rows = torch.arange(k, len(images), len(agents), device=device)
        coords[rows], values[rows] = agent_glimpses(policy, agent_core, max_glimpses, images[rows])
    return coords, values


def train_general(args: Args, core: PerceptionCore, device: torch.device) -> dict:
    """The general preset: the agents' trajectories, then :func:`pretrain_core_general`."""
    data = load_mnist("train", device)
    split = len(data) - args.val_images
    train, validation = (
        MnistSplit(data.images[:split], data.labels[:split]),
        MnistSplit(data.images[split:], data.labels[split:]),
    )
    trajectories = None
    if "trajectories" in args.sources:
        coords, values = agents_glimpses(args.trajectory_agents, args.max_glimpses, data.images, device)
        trajectories = ((coords[:split], values[:split]), (coords[split:], values[split:]))
    with tqdm(total=args.steps, desc="pretrain perception (general)") as progress:

        def show(point: GeneralValidation) -> None:
            accuracy = " ".join(f"{name} {100 * value:.1f}" for name, value in point.accuracy.items())
            say(f"step {point.step}: validation loss {point.loss:.4f}; accuracy at the last glimpse: {accuracy}")

        history = pretrain_core_general(
            core,
            train,
            validation,
            dict.fromkeys(args.sources, 1.0),
            args.steps,
            batch_size=args.batch_size,
            length=args.length,
            learning_rate=args.learning_rate,
            trajectories=trajectories,
            eval_every=args.eval_every,
            patience=args.patience,
            max_seconds=args.max_seconds or float("inf"),
            lr_decay=args.lr_decay,
            report=loss_reporter(progress),
            on_validation=show,
        )
        best = min(history, key=lambda point: point.loss)
        if history[-1].step < args.steps:
            waited = len(history) - 1 - history.index(best)
            reason = (
                f"no new best validation loss in {waited} validations (--patience)"
                if waited >= args.patience
                else f"time budget of {args.max_seconds:g} s reached (--max-seconds)"
            )
            end_stage(progress, "pretraining", reason, history[-1].step, args.steps)
    return {
        "validation": [dataclasses.asdict(point) for point in history],
        "best_step": best.step,
        "steps_taken": history[-1].step,
    }


def main(args: Args) -> dict:
    check_args(args)
    device = start(args)
    # a size PerceptionConfig refuses is refused before the output folder is claimed
    config = PerceptionConfig(
        args.channels, args.n_bins, args.head_hidden, args.encoding, args.head_layers, args.dropout
    )
    claim_output(Path(args.out).parent, args.overwrite)

    core = PerceptionCore(config).to(device)
    began = time.time()
    extra: dict = {}
    if args.preset == "general":
        extra = train_general(args, core, device)
    else:
        with tqdm(total=args.steps, desc="pretrain perception") as progress:
            data = load_mnist("train", device)
            sampler = Sampler(args.sampler)
            report = loss_reporter(progress)
            pretrain_core(
                core, data, args.steps, args.batch_size, args.max_glimpses, args.learning_rate, sampler, report
            )
    train_seconds = time.time() - began

    out = Path(args.out)
    core.eval()
    core.save(out, trained_by=f"train/pretrain_perception.py --preset {args.preset}", args=vars(args))
    print("evaluating on the 10,000 test images ...", flush=True)
    accuracy = accuracy_by_glimpse(RandomGlimpses(), core, args.max_glimpses, device=device)
    train_sampler = "set form: " + ", ".join(args.sources) if args.preset == "general" else args.sampler
    metrics = write_metrics(
        out.parent / "metrics.json",
        "random-glimpses" if args.preset == "random-glimpses" else f"core-{args.preset}",
        accuracy,
        train_sampler,
        train_seconds,
        str(device),
        args.seed,
        preset=args.preset,
        **extra,
    )
    print(summary(metrics, out.parent, [out.name, "metrics.json"]))
    return metrics


if __name__ == "__main__":
    run_main(main, parse_args())
