"""Train the differentiable end-to-end glimpse agent with its two optimizers.

    python train/differentiable.py                               # the continuous agent (preset "continuous")
    python train/differentiable.py --preset best --seed 1        # the best agent, its core's pretraining included
    python train/differentiable.py --preset fixed-sequence       # the learned fixed-sequence baseline
    python train/differentiable.py --preset pixel --epochs 10    # a preset, with a run flag changed
    python train/differentiable.py --preset best --help          # the flags, with that preset's values

A preset (:data:`PRESETS`) names a recipe: the policy, its attention target and training read-out,
and the settings that recipe was measured with. Run flags (epochs, learning rates, seed, device,
output, ...) change a preset's values; options that a recipe would ignore are refused with the fix.
The recipes' ablations are presets of their own (``argmin``, ``second``, ``ablation-*``), documented
in docs/studies/.

Training runs ``--epochs`` of both optimizers with the training read-out (bilinear), then
``--readout-epochs`` of the perception optimizer alone on nearest reads of the policy's glimpses, so
the core is tuned to the read-out it is evaluated with. With ``--core pretrain`` a core of
``--channels`` x ``--n-bins`` (``--encoding``) is first pretrained on random glimpses
(:func:`agents.pretrain.pretrain_core`, seed 0 whatever ``--seed``, so the seeds of a recipe share one
warm start, as they share the packaged one) and written to ``OUT/core/perception.pt``; a run whose
``OUT/core/perception.pt`` exists reuses it.

Writes ``OUT/checkpoint.pt`` (attention + core), ``OUT/metrics.json`` (nearest-pixel test accuracy
after 1, 2, 5, 10, 25 glimpses; with ``--curve-images`` also the accuracy along the dual steps, as
``train/gdfs.py`` records GDFS's) and ``OUT/glimpses.png``; TensorBoard logs go to ``OUT/tb``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.attention import AttentionNetwork
from agents.baselines import FixedSequence
from agents.checkpoint import save_agent
from agents.cli import UserValueError, parse_preset_args, run_main, user_errors
from agents.differentiable import DualOptimizerTrainer
from agents.evaluation import (
    accuracy_by_glimpse,
    accuracy_on,
    accuracy_table,
    claim_output,
    curve_milestones,
    curve_point,
    log_folder,
    summary,
    write_metrics,
)
from agents.figures import plot_glimpse_trails
from agents.pixel_attention import PixelAttention
from agents.pretrain import pretrain_core, pretrain_core_on_pixels
from agents.progress import end_stage, say
from agents.resume import ResumePoint
from agents.schedule import Plateau, stage_value, validate
from agents.shipped import AGENT_PATH
from envs.config import resolve_device
from envs.data import MnistSplit, ShuffledBatches, load_mnist
from envs.perception import RANDOM_GLIMPSES_PATH, PerceptionConfig, PerceptionCore
from envs.sampler import Sampler

Recipe = tyro.conf.Suppress  # a field that only a preset sets (no flag)


@dataclass
class Args:
    preset: Recipe[str] = "continuous"
    """the preset these values came from (recorded in the checkpoint and metrics.json)"""
    policy: Recipe[Literal["attention", "pixel", "fixed"]] = "attention"
    """adaptive attention network (continuous locations), adaptive choice among the 784 pixel centres
    (agents.pixel_attention), or a learned fixed (non-adaptive) sequence of T locations"""
    attention_target: Literal["label", "margin", "entropy", "value", "argmin", "second"] = "label"
    """the attention optimizer's objective: cross-entropy toward the true class (label), the smoothed
    margin of the true class over its closest rival (margin), the prediction's entropy (entropy, no
    label), the pixel policy's scores regressed on the loss drop of each pixel read, acting by argmax
    and exploring epsilon-greedily (value, as DIME), or toward the least likely or the runner-up class
    (argmin, second: the original design's)"""
    sampler: Recipe[Literal["bilinear", "bicubic", "gaussian", "nearest"]] = "bilinear"
    """training read-out (evaluation always uses nearest)"""
    sampler_gradient: Recipe[Literal["bilinear", "bicubic", "gaussian"] | None] = None
    """straight-through: read with `sampler`, take the location gradient from this kernel"""
    pixel_estimator: Recipe[Literal["mixture", "taken"]] = "mixture"
    """pixel policy: what learns from the relaxed choice (envs.episode.step)"""
    pixel_repeat_penalty: Recipe[float] = 0.0
    """pixel policy without memory: weight of PixelAttention.repeat_probability in the attention loss"""
    lr_final: Recipe[float] = 1.0
    """both learning rates at the end of the dual epochs, as a fraction of the initial ones (1 = constant)"""

    glimpses: int = 25
    """glimpses per episode (T)"""
    epochs: int = 15
    """passes of both optimizers over the 60,000 training images"""
    readout_epochs: float = 1.0
    """after --epochs, passes that train only the core (perception optimizer, policy fixed) on nearest
    reads of the policy's own glimpses, the evaluation read-out (0 = off)"""
    max_train_seconds: float = 0.0
    """stop the dual-optimizer epochs after this many seconds of wall clock, mid-epoch if need be
    (0 = no limit); the read-out epochs still run; the steps actually taken are in metrics.json"""
    budget_seconds: float = 0.0
    """fit the whole run in about this many seconds of wall clock (0 = off: the step counts decide):
    core pretraining (--core pretrain) gets 20% of it, the dual epochs 70%, the read-out 10%, each
    stopping early if need be; the noise and learning-rate schedules follow the larger of the share of
    steps and the share of time used, so a run cut short still ends annealed"""
    batch_size: int = 256
    """images per optimizer step"""
    val_images: int = 0
    """hold out the last N of the 60,000 training images for validation (0 = none): the dual epochs
    then train on the others, validate the hard choice (eval mode, nearest reads) every --val-every
    steps and end on the weights with the best validation loss (agents.schedule); the validation
    curve goes to metrics.json"""
    val_every: int = 100
    """optimizer steps between validations (with --val-images)"""
    stages: int = 1
    """stages of the dual epochs, as GDFS trains (agents.schedule): the pixel policy's noise and
    temperature annealed geometrically from stage to stage and constant within one, a fresh Adam per
    stage, each stage at most a 1/S share of the steps (and of the time budget) and starting from the
    best validated weights so far; 1 = one stage, noise and temperature annealed linearly"""
    curve_images: int = 0
    """record the test accuracy after 5, 10 and 25 glimpses on the first N test images after 1, 2, 5,
    10, 20, 50, ... dual-optimizer steps and after the last (metrics.json "curve"; 0 = off); the
    evaluations are off the training clock"""
    plateau_patience: int = 0
    """with --val-images: cut both learning rates by 0.2 after more than P validations of a stage
    without a new best, and end the stage after more than P + 1 (GDFS: 2; 0 = off)"""
    perception_lr: float = 1e-3
    """Adam learning rate of the perception optimizer"""
    attention_lr: float = 1e-3
    """Adam learning rate of the attention optimizer"""
    attention_credit: Literal["episode", "greedy"] = "episode"
    """which losses train a glimpse's choice: its own and all later ones (episode), or its own only (greedy, as GDFS)"""
    hidden: int = 128
    """attention network width (continuous and pixel policies)"""
    step_bias: bool = True
    """continuous policy: add a learned per-glimpse offset to the attention output (fixed sequence +
    adaptive correction)"""
    pixel_memory: Literal["none", "pixels"] = "none"
    """pixel policy: "pixels" lets the policy see the pixels it has read (mask and grey levels, the
    masked image GDFS's selector sees) and never read one twice; it then acts outside the environment only"""
    pixel_noise_final: float = 1.0
    """pixel policy: scale of the training Gumbel noise (with --attention-target value: the probability
    of a uniform pixel) at the end of the dual epochs, annealed linearly from 1 (sampling from the
    policy; uniform pixels) towards 0 (its argmax, what acting takes)"""
    pixel_candidates: int = 16
    """pixel policy: K, the top-K Gumbel-perturbed pixels whose increments the training relaxation mixes"""
    pixel_temperature: float = 1.0
    """pixel policy: temperature of the Gumbel-softmax relaxation (at the start)"""
    pixel_temperature_final: float | None = None
    """pixel policy: the relaxation's temperature at the end of the dual epochs, annealed geometrically
    on the noise's schedule (None: --pixel-temperature throughout)"""
    core: str = "random-glimpses"
    """the perception core to start from: the packaged core trained on random glimpses
    ("random-glimpses"), a fresh init ("scratch"), a core pretrained on random glimpses first ("pretrain",
    sized by --channels/--n-bins/--encoding), or a perception-core checkpoint PATH"""
    channels: int = 32
    """RecurrentSoftOrdering channels of a --core scratch or pretrain"""
    n_bins: int = 4
    """soft bins per channel of a --core scratch or pretrain"""
    encoding: Literal["plain", "fourier", "learned", "embedding"] = "plain"
    """glimpse encoding of a --core scratch or pretrain (envs.perception.GlimpseEncoding)"""
    core_hidden: int = 128
    """width of the classifier head's hidden layers of a --core scratch or pretrain"""
    core_head_layers: int = 1
    """hidden layers of the classifier head of a --core scratch or pretrain (GDFS's predictor: 2 x 512)"""
    core_dropout: float = 0.0
    """dropout in the classifier head of a --core scratch or pretrain (GDFS's predictor: 0.3)"""
    pretrain_steps: int = 3000
    """--core pretrain: Adam steps on random glimpses (batch 256, lr 3e-3, as train/pretrain_perception.py)"""
    pretrain_on: Literal["glimpses", "pixels"] = "glimpses"
    """--core pretrain: T uniformly random glimpses read with the training sampler, one after the other
    (agents.pretrain.pretrain_core), or 50 distinct random pixels read exactly, every prefix scored at
    once in set form (agents.pretrain.pretrain_core_on_pixels)"""
    seed: int = 0
    """seed of python, numpy and torch"""
    device: str = "auto"
    """cpu, cuda or auto"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default, one per core); 1, the default, does not collapse when
    other jobs share a small CPU (docs/studies/env-throughput.md)"""
    out: str = "runs/differentiable"
    """output folder"""
    overwrite: bool = False
    """replace a finished or interrupted run in --out; without it such a folder is refused"""
    resume: bool = False
    """continue the interrupted run in --out (its resume.pt) to the result an uninterrupted run gives"""
    save_every: float = 300.0
    """seconds between saves of OUT/resume.pt during training (also written on SIGINT/SIGTERM)"""


_PIXEL = dict(policy="pixel", attention_lr=1e-2, pixel_noise_final=0.1, epochs=5)
_PIXEL_MEMORY = dict(_PIXEL, pixel_memory="pixels")
_BEST = dict(_PIXEL_MEMORY, attention_credit="greedy", core="pretrain", channels=16, n_bins=32, encoding="learned")

#: The recipes: name -> (what it is, the values that differ from :class:`Args`' defaults).
PRESETS: dict[str, tuple[str, dict]] = {
    "continuous": ("the continuous attention network, trained end to end (label target)", {}),
    "fixed-sequence": ("a learned fixed (non-adaptive) sequence of glimpses: the baseline", dict(policy="fixed")),
    "pixel": ("choose among the 784 pixel centres (Gumbel-softmax relaxation, noise annealed to 0.1)", _PIXEL),
    "pixel-memory": ("pixel, and the policy sees the pixels it has read (acts outside the environment)", _PIXEL_MEMORY),
    "best": (
        "pixel-memory with greedy credit, on a 16x32 core with the learned encoding pretrained first",
        _BEST,
    ),
    "ablation-gdfs-schedule": (
        "ablation: best on GDFS's schedule: 10,000 validation images, 5 stages (noise and temperature 1 -> 0.1), "
        "plateau learning rates, best validated weights",
        dict(
            _BEST,
            val_images=10_000,
            val_every=65,
            stages=5,
            pixel_temperature_final=0.1,
            plateau_patience=2,
        ),
    ),
    "argmin": ("ablation: attention toward the least probable class", dict(attention_target="argmin")),
    "second": ("ablation: attention toward the runner-up class", dict(attention_target="second")),
    "ablation-straight-through": (
        "ablation: read the nearest pixel, take the bilinear kernel's gradient",
        dict(sampler="nearest", sampler_gradient="bilinear"),
    ),
    "ablation-gaussian-sampler": (
        "ablation: train with the gaussian read-out (no dead zones)",
        dict(sampler="gaussian"),
    ),
    "ablation-repeat-penalty": (
        "ablation: pixel, penalising pixels read twice (weight 1)",
        dict(_PIXEL, pixel_repeat_penalty=1.0),
    ),
    "ablation-estimator-taken": (
        "ablation: pixel-memory, the straight-through estimator of the choice taken",
        dict(_PIXEL_MEMORY, pixel_estimator="taken"),
    ),
    "ablation-lr-final": (
        "ablation: pixel-memory, both learning rates annealed to a tenth",
        dict(_PIXEL_MEMORY, lr_final=0.1),
    ),
}


def preset_args(name: str) -> Args:
    """The :class:`Args` of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; valid presets are {list(PRESETS)}.")
    return dataclasses.replace(Args(), preset=name, **PRESETS[name][1])


def parse_args(argv: list[str] | None = None) -> Args:
    """``--preset NAME`` (default ``continuous``) picks the defaults; the other flags change them."""
    return parse_preset_args(Args, PRESETS, "continuous", __doc__, argv)


def check_args(args: Args) -> None:
    """Refuse, before any work, values out of range and options the recipe would ignore."""
    for name in ("epochs", "max_train_seconds", "readout_epochs", "budget_seconds"):
        if getattr(args, name) < 0:
            raise UserValueError(f"--{name.replace('_', '-')} must be >= 0 (0 = none), got {getattr(args, name)}.")
    if args.budget_seconds > 0 and args.max_train_seconds > 0:
        raise UserValueError("--budget-seconds already caps the dual epochs; drop --max-train-seconds.")
    if not 1 <= args.batch_size <= 60_000:
        raise UserValueError(f"--batch-size must be between 1 and 60000 (the training images), got {args.batch_size}.")
    if args.glimpses < 1:
        raise UserValueError(f"--glimpses must be >= 1, got {args.glimpses}.")
    if not 0 <= args.val_images <= 60_000 - args.batch_size:
        raise UserValueError(
            f"--val-images must be between 0 and {60_000 - args.batch_size} (the training images less one batch), "
            f"got {args.val_images}."
        )
    if not 0 <= args.curve_images <= 10_000:
        raise UserValueError(
            f"--curve-images must be between 0 (off) and 10000 (the test images), got {args.curve_images}."
        )
    for name in ("val_every", "stages"):
        if getattr(args, name) < 1:
            raise UserValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.plateau_patience < 0:
        raise UserValueError(f"--plateau-patience must be >= 0 (0 = off), got {args.plateau_patience}.")
    if args.plateau_patience > 0 and args.val_images == 0:
        raise UserValueError("--plateau-patience watches the validation loss: pass --val-images N (GDFS: 10000).")
    if args.lr_final != 1.0 and (args.stages > 1 or args.plateau_patience > 0):
        raise UserValueError(
            "--lr-final anneals one stage's learning rates; with --stages or --plateau-patience each stage "
            "restarts them and the plateau cuts them: drop --lr-final."
        )
    if args.policy == "pixel" and args.stages > 1 and not args.pixel_noise_final > 0:
        raise UserValueError(
            f"--stages anneals the noise geometrically, which needs --pixel-noise-final > 0, got {args.pixel_noise_final}."
        )
    for name in ("pixel_temperature", "pixel_temperature_final"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UserValueError(f"--{name.replace('_', '-')} must be > 0, got {value}.")
    if not args.lr_final > 0:
        raise UserValueError(f"lr_final must be > 0 (1 = constant learning rates), got {args.lr_final}.")
    if args.core not in ("scratch", "random-glimpses", "pretrain") and not Path(args.core).is_file():
        raise UserValueError(
            f"--core {args.core}: not random-glimpses, scratch, pretrain or an existing file; pass the path "
            "of a perception-core checkpoint (train/pretrain_perception.py --out PATH writes one)."
        )
    core_config(args)  # a size PerceptionConfig refuses is refused here, before anything is written
    defaults = Args()

    def refuse_unless(condition: bool, names: tuple[str, ...], reason: str) -> None:
        for name in names:
            value = getattr(args, name)
            if value != getattr(defaults, name) and not condition:
                flag = "--" + name.replace("_", "-")
                raise UserValueError(f"{flag} {value} (from --preset {args.preset} or your flags) {reason}")

    refuse_unless(
        args.core in ("scratch", "pretrain"),
        ("channels", "n_bins", "encoding", "core_hidden", "core_head_layers", "core_dropout"),
        f"sizes a --core scratch or pretrain; --core {args.core} brings its own size. Pass --core scratch "
        "or --core pretrain, or leave the size at its default.",
    )
    refuse_unless(
        args.core == "pretrain",
        ("pretrain_steps", "pretrain_on"),
        f"is an option of --core pretrain, not of --core {args.core}.",
    )
    pixel_presets = [name for name, (_, values) in PRESETS.items() if values.get("policy") == "pixel"]
    refuse_unless(
        args.policy == "pixel",
        (
            "pixel_memory",
            "pixel_estimator",
            "pixel_candidates",
            "pixel_noise_final",
            "pixel_temperature",
            "pixel_temperature_final",
        ),
        f"is an option of the pixel policy ({', '.join(pixel_presets)}), not of --preset {args.preset}.",
    )
    refuse_unless(
        args.policy == "attention",
        ("step_bias",),
        f"is an option of the continuous policy (--preset continuous), not of --preset {args.preset}.",
    )
    refuse_unless(args.policy != "fixed", ("hidden",), "sizes an attention network; a fixed sequence has none.")
    if args.attention_target == "value" and args.policy != "pixel":
        raise UserValueError(
            "--attention-target value trains the pixel policy's scores as a value head; pass a pixel preset "
            f"({', '.join(pixel_presets)}), not --preset {args.preset}."
        )


#: Shares of --budget-seconds: core pretraining, dual epochs, read-out.
BUDGET_SHARES = {"pretrain": 0.2, "dual": 0.7, "readout": 0.1}
#: The phases as the console names them.
STAGE_NAMES = {"dual": "dual epochs", "readout": "read-out epochs"}


def core_config(args: Args) -> PerceptionConfig:
    """The size of a ``--core scratch`` or ``pretrain`` (checked by :class:`~envs.perception.PerceptionConfig`)."""
    return PerceptionConfig(
        args.channels, args.n_bins, args.core_hidden, args.encoding, args.core_head_layers, args.core_dropout
    )


def build_core(args: Args, data, device: torch.device, out: Path) -> PerceptionCore:
    """The core the agent starts from (``--core``); ``pretrain`` trains one first, or reuses ``OUT/core``'s."""
    if args.core == "scratch":
        return PerceptionCore(core_config(args)).to(device)
    if args.core == "random-glimpses":
        return PerceptionCore.load(RANDOM_GLIMPSES_PATH, device).train()
    if args.core != "pretrain":
        with user_errors(ValueError, FileNotFoundError):  # a --core file that cannot be used
            return PerceptionCore.load(args.core, device).train()
    path = out / "core" / "perception.pt"
    if path.is_file():
        print(f"reusing the pretrained core {path}")
        return PerceptionCore.load(path, device).train()
    # Seed 0 in a forked generator: the recipe's seeds share one warm start, and the agent's own
    # random stream is left as if the core had been loaded from a file.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        core = PerceptionCore(core_config(args)).to(device)
        max_seconds = BUDGET_SHARES["pretrain"] * args.budget_seconds or math.inf
        with tqdm(total=args.pretrain_steps, desc=f"pretrain core on random {args.pretrain_on}") as progress:
            settings = dict(report=lambda step, loss: progress.update(), max_seconds=max_seconds)
            if args.pretrain_on == "pixels":
                pretrain_core_on_pixels(core, data, args.pretrain_steps, **settings)
            else:
                pretrain_core(core, data, args.pretrain_steps, glimpses=args.glimpses, **settings)
            if progress.n < args.pretrain_steps:
                reason = f"time budget of {max_seconds:.3g} s reached (--budget-seconds)"
                end_stage(progress, "core pretraining", reason, progress.n, args.pretrain_steps)
    core.save(path, trained_by="train/differentiable.py --core pretrain", args=vars(args))
    return core.train()


def main(args: Args, stop_after: int | None = None) -> dict:
    """Train, evaluate and write the run. ``stop_after``: act as if interrupted after that many
    optimizer steps (tests of --resume)."""
    check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    resume = ResumePoint(args.out, args, stop_after)
    out = claim_output(args.out, args.overwrite)
    writer = SummaryWriter(str(log_folder(out)))

    data = load_mnist("train", device)
    train_count = len(data) - args.val_images  # the last --val-images are held out, from pretraining too
    core = build_core(args, MnistSplit(data.images[:train_count], data.labels[:train_count]), device, out)
    if args.policy == "attention":
        policy = AttentionNetwork(core.observation_size, args.hidden, args.glimpses, args.step_bias).to(device)
    elif args.policy == "pixel":
        policy = PixelAttention(
            core.observation_size,
            args.glimpses,
            args.hidden,
            args.pixel_temperature,
            candidates=args.pixel_candidates,
            memory=args.pixel_memory,
            exploration="epsilon" if args.attention_target == "value" else "gumbel",
        ).to(device)
    else:
        policy = FixedSequence(args.glimpses).to(device)
    sampler = Sampler(args.sampler, gradient=args.sampler_gradient)
    trainer = DualOptimizerTrainer(
        policy,
        core,
        sampler,
        args.glimpses,
        attention_target=args.attention_target,
        perception_lr=args.perception_lr,
        attention_lr=args.attention_lr,
        repeat_penalty=args.pixel_repeat_penalty,
        pixel_estimator=args.pixel_estimator,
        attention_credit=args.attention_credit,
    )

    validation = (data.images[train_count:], data.labels[train_count:]) if args.val_images else None
    steps_per_epoch = train_count // args.batch_size
    readout = Sampler("nearest")
    schedule = {"dual": args.epochs * steps_per_epoch, "readout": round(args.readout_epochs * steps_per_epoch)}
    steps_done = dict.fromkeys(schedule, 0)
    batches = ShuffledBatches(train_count, args.batch_size, device)
    plateau = Plateau(args.plateau_patience)
    # The staged schedule's position: the stage, and the step and dual clock at which it began.
    stage = {"index": 0, "start_step": 0, "start_clock": 0.0}
    curve: list[dict] = []  # validations
    steps_curve: list[dict] = []  # test accuracy along the dual steps (--curve-images)
    milestones = set(curve_milestones())
    curve_test = load_mnist("test", device) if args.curve_images else None
    best_restored = False  # the dual phase ended on the best validated weights
    saved = resume.restore()
    clock = dict.fromkeys(schedule, 0.0)  # seconds spent in each phase (counted against --budget-seconds)
    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
        batches.load_state_dict(saved["batches"])
        steps_done.update(saved["steps_done"])
        clock.update(saved.get("clock", {}))
        plateau.load_state_dict(saved["plateau"])
        stage.update(saved["stage"])
        curve, best_restored = saved["curve"], saved["best_restored"]
        steps_curve = saved.get("steps_curve", [])
    trained = saved is not None and saved.get("trained", False)  # interrupted after training: evaluate and write
    budget = {phase: BUDGET_SHARES[phase] * args.budget_seconds or math.inf for phase in schedule}
    if args.max_train_seconds > 0:
        budget["dual"] = args.max_train_seconds
    start = time.time()
    progress = tqdm(
        total=sum(schedule.values()), initial=sum(steps_done.values()), desc=f"differentiable --preset {args.preset}"
    )

    def run_state() -> dict:
        """Everything an uninterrupted run still holds: weights, optimizers, batch position, counters."""
        return {
            "trainer": trainer.state_dict(),
            "batches": batches.state_dict(),
            "steps_done": dict(steps_done),
            "clock": dict(clock),
            "plateau": plateau.state_dict(),
            "stage": dict(stage),
            "curve": list(curve),
            "steps_curve": list(steps_curve),
            "best_restored": best_restored,
        }

    def weights() -> dict:
        return {"policy": policy.state_dict(), "core": core.state_dict()}

    def restore_best() -> None:
        if plateau.best_state is not None:
            policy.load_state_dict(plateau.best_state["policy"])
            core.load_state_dict(plateau.best_state["core"])

    def validate_now() -> None:
        loss, accuracy = validate(policy, core, *validation, args.glimpses)
        best = plateau.update(loss, weights(), steps_done["dual"])
        table = accuracy_table(accuracy)
        curve.append(
            {
                "step": steps_done["dual"],
                "seconds": round(clock["dual"], 1),
                "stage": stage["index"],
                "loss": round(loss, 5),
                "accuracy": table,
                "best": best,
            }
        )
        say(
            f"validation at step {steps_done['dual']:,}: loss {loss:.4f}, accuracy "
            f"{100 * table[str(args.glimpses)]:.1f}% after {args.glimpses} glimpses{' (best so far)' if best else ''}"
        )
        writer.add_scalar("validation/loss", loss, steps_done["dual"])
        writer.add_scalar("validation/accuracy_last", table[str(args.glimpses)], steps_done["dual"])
        if args.plateau_patience > 0:
            trainer.scale_learning_rates(plateau.scale)

    def record_curve() -> float:
        """Test accuracy on the curve's images at this dual step (eval mode); returns the seconds it took."""
        if not args.curve_images or (steps_curve and steps_curve[-1]["step"] == steps_done["dual"]):
            return 0.0
        began = time.time()
        modes = [(module, module.training) for module in (policy, core)]
        policy.eval()
        core.eval()
        images, labels = curve_test.images[: args.curve_images], curve_test.labels[: args.curve_images]
        accuracy = accuracy_on(policy, core, images, labels, args.glimpses)
        for module, mode in modes:
            module.train(mode)
        steps_curve.append(curve_point(steps_done["dual"], clock["dual"], accuracy))
        return time.time() - began

    def stage_over() -> bool:
        """Whether the current stage has had its share of steps or time, or stopped improving."""
        steps = steps_done["dual"] - stage["start_step"] >= schedule["dual"] // args.stages
        seconds = clock["dual"] - stage["start_clock"] > budget["dual"] / args.stages
        return steps or seconds or (args.plateau_patience > 0 and plateau.stop)

    def why_ended(phase: str) -> str:
        """Why ``phase`` stopped before its planned steps."""
        if clock[phase] > budget[phase]:
            flag = "--max-train-seconds" if phase == "dual" and args.max_train_seconds > 0 else "--budget-seconds"
            return f"time budget of {budget[phase]:.3g} s reached ({flag})"
        if args.plateau_patience > 0 and plateau.stop:
            return f"last stage ({args.stages}) stopped improving on validation"
        return f"last stage ({args.stages}) ended"

    with resume:
        with progress:
            for phase, phase_steps in ({} if trained else schedule).items():
                phase_start = time.time() - clock[phase]
                if phase == "dual" and steps_done["dual"] == 0:
                    phase_start += record_curve()  # step 0: where the dual epochs start from
                while steps_done[phase] < phase_steps:
                    clock[phase] = time.time() - phase_start
                    if clock[phase] > budget[phase]:
                        break
                    if phase == "dual" and args.stages > 1 and stage_over():
                        if stage["index"] == args.stages - 1:
                            break
                        # The next stage starts from the best validated weights, with fresh optimizers.
                        stage.update(index=stage["index"] + 1, start_step=steps_done["dual"], start_clock=clock["dual"])
                        restore_best()
                        trainer.reset_optimizers()
                        plateau.new_stage()
                    resume.step(sum(steps_done.values()), run_state)
                    batch = next(batches)
                    images, labels = data.images[batch].float() / 255.0, data.labels[batch]
                    global_step = sum(steps_done.values())
                    if phase == "dual":
                        if args.stages > 1:  # geometric from stage to stage, constant within one
                            done = stage["index"] / (args.stages - 1)
                            noise = stage_value(1.0, args.pixel_noise_final, stage["index"], args.stages)
                        else:
                            done = steps_done["dual"] / schedule["dual"]  # linear schedules over the dual epochs ...
                            if args.budget_seconds > 0:  # ... or over its time budget, whichever ends first
                                done = min(1.0, max(done, clock["dual"] / budget["dual"]))
                            noise = 1.0 - (1.0 - args.pixel_noise_final) * done
                        if isinstance(policy, PixelAttention):
                            policy.noise = noise
                            final = args.pixel_temperature_final or args.pixel_temperature
                            policy.temperature = args.pixel_temperature * (final / args.pixel_temperature) ** done
                        if args.lr_final != 1.0:
                            trainer.scale_learning_rates(1.0 - (1.0 - args.lr_final) * done)
                        stats = trainer.step(images, labels)
                        if global_step % 50 == 0:
                            writer.add_scalar("losses/perception", stats.perception_loss, global_step)
                            writer.add_scalar("losses/attention", stats.attention_loss, global_step)
                            writer.add_scalar("charts/train_accuracy_last", stats.accuracy_last, global_step)
                            progress.set_postfix(loss=f"{stats.perception_loss:.3f}", acc=f"{stats.accuracy_last:.3f}")
                    else:
                        loss = trainer.readout_step(images, labels, readout)
                        if global_step % 50 == 0:
                            writer.add_scalar("losses/perception_nearest_readout", loss, global_step)
                            progress.set_postfix(phase="readout", loss=f"{loss:.3f}")
                    progress.update()
                    steps_done[phase] += 1
                    if phase == "dual" and steps_done["dual"] in milestones:
                        phase_start += record_curve()  # off the clock
                    if phase == "dual" and validation is not None and steps_done["dual"] % args.val_every == 0:
                        validate_now()
                if phase == "dual":
                    record_curve()  # the last dual step
                if steps_done[phase] < phase_steps:  # the stage's time budget, or its last stage, ended it
                    end_stage(progress, STAGE_NAMES[phase], why_ended(phase), steps_done[phase], phase_steps)
                if phase == "dual" and validation is not None and not best_restored:
                    if not curve or curve[-1]["step"] != steps_done["dual"]:
                        validate_now()  # the dual phase's last weights
                    restore_best()  # the read-out and evaluation start from the best validated weights
                    best_restored = True
        train_seconds = saved["train_seconds"] if trained else time.time() - start
        resume.final(sum(steps_done.values()), lambda: {**run_state(), "trained": True, "train_seconds": train_seconds})

        policy.eval()
        core.eval()
        print("evaluating on the 10,000 test images ...", flush=True)
        nearest = accuracy_by_glimpse(policy, core, args.glimpses, device=device)
        trained_readout = accuracy_by_glimpse(policy, core, args.glimpses, sampler=sampler, device=device)
        for budget, accuracy in accuracy_table(nearest).items():
            writer.add_scalar("eval/test_accuracy_nearest", accuracy, int(budget))
        agent = {"attention": "differentiable", "pixel": "differentiable-pixel", "fixed": "fixed-sequence"}[args.policy]
        save_agent(out / "checkpoint.pt", agent, policy, core, args.glimpses, args=vars(args), run_id=resume.run_id)
        print(f"drawing glimpse trails to {out / 'glimpses.png'} ...", flush=True)
        plot_glimpse_trails(policy, core, args.glimpses, out / "glimpses.png", device=device)
        writer.close()
        metrics = resume.finish(  # metrics.json last: it marks the run finished
            lambda: write_metrics(
                out / "metrics.json",
                agent,
                nearest,
                sampler.name,
                train_seconds,
                str(device),
                args.seed,
                attention_target=args.attention_target if args.policy != "fixed" else None,
                test_accuracy_train_sampler=accuracy_table(trained_readout),
                epochs=args.epochs,
                optimizer_steps=steps_done["dual"],
                epochs_done=round(steps_done["dual"] / steps_per_epoch, 2),
                readout_epochs=args.readout_epochs,
                readout_steps=steps_done["readout"],
                **({"curve_images": args.curve_images, "curve": steps_curve} if args.curve_images else {}),
                preset=args.preset,
                run_id=resume.run_id,
                **(
                    {
                        "validation": {
                            "images": args.val_images,
                            "best_step": plateau.best_step,
                            "best_loss": round(plateau.best_loss, 5),
                            "stages_run": stage["index"] + 1,
                            "curve": curve,
                        }
                    }
                    if validation is not None
                    else {}
                ),
            )
        )
    print(summary(metrics, out, ["checkpoint.pt", "metrics.json", "glimpses.png", "tb/"]))
    if args.preset == "best":  # the same recipe, trained to its full schedule, ships with the package
        shipped = torch.load(AGENT_PATH, map_location="cpu", weights_only=True)["test_accuracy"]
        print(f"the shipped agent ({AGENT_PATH.name}, --preset best --seed 0, full schedule):")
        print("  glimpses " + "".join(f"{b:>6}" for b in shipped))
        print("  accuracy " + "".join(f"{100 * v:>6.1f}" for v in shipped.values()))
    return metrics


if __name__ == "__main__":
    run_main(main, parse_args())
