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
the core is tuned to the read-out it is evaluated with. With ``--core-start pretrain`` a core of
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.attention import AttentionNetwork
from agents.baselines import FixedSequence
from agents.cli import UserValueError, parse_preset_args, refuse_retired, run_main, user_errors
from agents.differentiable import DualOptimizerTrainer
from agents.evaluation import accuracy_by_glimpse, accuracy_on
from agents.pixel_attention import PixelAttention
from agents.pretrain import pretrain_core, pretrain_core_on_pixels
from agents.schedule import Plateau, Stages, validate
from agents.shipped import AGENT_PATH
from envs.data import MnistSplit, ShuffledBatches, load_mnist
from envs.perception import RANDOM_GLIMPSES_PATH, PerceptionConfig, PerceptionCore
from envs.sampler import Sampler
from run import (
    ResumableArgs,
    ResumePoint,
    accuracy_lines,
    accuracy_table,
    claim_output,
    curve_milestones,
    curve_point,
    end_stage,
    log_folder,
    say,
    start,
    summary,
    write_agent_run,
)

Recipe = tyro.conf.Suppress  # a field that only a preset sets (no flag)


@dataclass
class Args(ResumableArgs):
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

    max_glimpses: int = 25
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
    core pretraining (--core-start pretrain) gets 20% of it, the dual epochs 70%, the read-out 10%, each
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
    attention_hidden: int = 128
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
    core_start: str = "random-glimpses"
    """the perception core to start from: the packaged core trained on random glimpses
    ("random-glimpses"), a fresh init ("scratch"), a core pretrained on random glimpses first ("pretrain",
    sized by --channels/--n-bins/--encoding), or a perception-core checkpoint PATH"""
    channels: int = 32
    """RecurrentSoftOrdering channels of a --core-start scratch or pretrain"""
    n_bins: int = 4
    """soft bins per channel of a --core-start scratch or pretrain"""
    encoding: Literal["plain", "fourier", "learned", "embedding"] = "plain"
    """glimpse encoding of a --core-start scratch or pretrain (envs.perception.GlimpseEncoding)"""
    core_head_hidden: int = 128
    """width of the classifier head's hidden layers of a --core-start scratch or pretrain"""
    core_head_layers: int = 1
    """hidden layers of the classifier head of a --core-start scratch or pretrain (GDFS's predictor: 2 x 512)"""
    core_dropout: float = 0.0
    """dropout in the classifier head of a --core-start scratch or pretrain (GDFS's predictor: 0.3)"""
    pretrain_steps: int = 3000
    """--core-start pretrain: Adam steps on random glimpses (batch 256, lr 3e-3, as train/pretrain_perception.py)"""
    pretrain_on: Literal["glimpses", "pixels"] = "glimpses"
    """--core-start pretrain: T uniformly random glimpses read with the training sampler, one after the other
    (agents.pretrain.pretrain_core), or 50 distinct random pixels read exactly, every prefix scored at
    once in set form (agents.pretrain.pretrain_core_on_pixels)"""
    out: str = "runs/differentiable"
    """output folder"""


_PIXEL = dict(policy="pixel", attention_lr=1e-2, pixel_noise_final=0.1, epochs=5)
_PIXEL_MEMORY = dict(_PIXEL, pixel_memory="pixels")
_BEST = dict(
    _PIXEL_MEMORY, attention_credit="greedy", core_start="pretrain", channels=16, n_bins=32, encoding="learned"
)

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


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--hidden": "--attention-hidden",
    "--core-hidden": "--core-head-hidden",
    "--core": "--core-start",
}


def parse_args(argv: list[str] | None = None) -> Args:
    """``--preset NAME`` (default ``continuous``) picks the defaults; the other flags change them."""
    return parse_preset_args(Args, PRESETS, "continuous", __doc__, refuse_retired(RETIRED, argv))


def check_args(args: Args) -> None:
    """Refuse, before any work, values out of range and options the recipe would ignore."""
    for name in ("epochs", "max_train_seconds", "readout_epochs", "budget_seconds"):
        if getattr(args, name) < 0:
            raise UserValueError(f"--{name.replace('_', '-')} must be >= 0 (0 = none), got {getattr(args, name)}.")
    if args.budget_seconds > 0 and args.max_train_seconds > 0:
        raise UserValueError("--budget-seconds already caps the dual epochs; drop --max-train-seconds.")
    if not 1 <= args.batch_size <= 60_000:
        raise UserValueError(f"--batch-size must be between 1 and 60000 (the training images), got {args.batch_size}.")
    if args.max_glimpses < 1:
        raise UserValueError(f"--max-glimpses must be >= 1, got {args.max_glimpses}.")
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
    if args.core_start not in ("scratch", "random-glimpses", "pretrain") and not Path(args.core_start).is_file():
        raise UserValueError(
            f"--core-start {args.core_start}: not random-glimpses, scratch, pretrain or an existing file; pass the path "
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
        args.core_start in ("scratch", "pretrain"),
        ("channels", "n_bins", "encoding", "core_head_hidden", "core_head_layers", "core_dropout"),
        f"sizes a --core-start scratch or pretrain; --core-start {args.core_start} brings its own size. Pass --core-start scratch "
        "or --core-start pretrain, or leave the size at its default.",
    )
    refuse_unless(
        args.core_start == "pretrain",
        ("pretrain_steps", "pretrain_on"),
        f"is an option of --core-start pretrain, not of --core-start {args.core_start}.",
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
    refuse_unless(
        args.policy != "fixed", ("attention_hidden",), "sizes an attention network; a fixed sequence has none."
    )
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
    """The size of a ``--core-start scratch`` or ``pretrain`` (checked by :class:`~envs.perception.PerceptionConfig`)."""
    return PerceptionConfig(
        args.channels, args.n_bins, args.core_head_hidden, args.encoding, args.core_head_layers, args.core_dropout
    )


def build_core(args: Args, data, device: torch.device, out: Path) -> PerceptionCore:
    """The core the agent starts from (``--core-start``); ``pretrain`` trains one first, or reuses ``OUT/core``'s."""
    if args.core_start == "scratch":
        return PerceptionCore(core_config(args)).to(device)
    if args.core_start == "random-glimpses":
        return PerceptionCore.load(RANDOM_GLIMPSES_PATH, device).train()
    if args.core_start != "pretrain":
        with user_errors(ValueError, FileNotFoundError):  # a --core-start file that cannot be used
            return PerceptionCore.load(args.core_start, device).train()
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
                pretrain_core(core, data, args.pretrain_steps, max_glimpses=args.max_glimpses, **settings)
            if progress.n < args.pretrain_steps:
                reason = f"time budget of {max_seconds:.3g} s reached (--budget-seconds)"
                end_stage(progress, "core pretraining", reason, progress.n, args.pretrain_steps)
    core.save(path, trained_by="train/differentiable.py --core-start pretrain", args=vars(args))
    return core.train()


def build_policy(args: Args, core: PerceptionCore, device: torch.device) -> torch.nn.Module:
    """The policy of ``--preset``'s recipe: the attention network, the pixel policy or a fixed sequence."""
    if args.policy == "attention":
        return AttentionNetwork(core.observation_size, args.attention_hidden, args.max_glimpses, args.step_bias).to(
            device
        )
    if args.policy == "pixel":
        return PixelAttention(
            core.observation_size,
            args.max_glimpses,
            args.attention_hidden,
            args.pixel_temperature,
            candidates=args.pixel_candidates,
            memory=args.pixel_memory,
            exploration="epsilon" if args.attention_target == "value" else "gumbel",
        ).to(device)
    return FixedSequence(args.max_glimpses).to(device)


class Training:
    """The dual epochs, then the read-out epochs, with everything an uninterrupted run holds at a step
    boundary (:meth:`kept`): the trainer, the batch stream, the steps and seconds of each phase, the
    stages and the plateau, the validation curve and the test-accuracy curve.

    :param data: the 60,000 training images; the last ``--val-images`` are held out for validation.
    """

    def __init__(
        self,
        args: Args,
        data: MnistSplit,
        trainer: DualOptimizerTrainer,
        writer: SummaryWriter,
        device: torch.device,
    ) -> None:
        self.args, self.data, self.trainer, self.writer = args, data, trainer, writer
        self.policy, self.core = trainer.policy, trainer.core
        train_count = len(data) - args.val_images
        self.validation = (data.images[train_count:], data.labels[train_count:]) if args.val_images else None
        self.steps_per_epoch = train_count // args.batch_size
        self.readout = Sampler("nearest")
        steps = {
            "dual": args.epochs * self.steps_per_epoch,
            "readout": round(args.readout_epochs * self.steps_per_epoch),
        }
        self.planned = steps
        self.steps_done = dict.fromkeys(steps, 0)
        self.clock = dict.fromkeys(steps, 0.0)  # seconds spent in each phase (counted against --budget-seconds)
        self.budget = {phase: BUDGET_SHARES[phase] * args.budget_seconds or math.inf for phase in steps}
        if args.max_train_seconds > 0:
            self.budget["dual"] = args.max_train_seconds
        self.batches = ShuffledBatches(train_count, args.batch_size, device)
        self.plateau = Plateau(args.plateau_patience)
        self.stages = Stages(args.stages)
        self.curve: list[dict] = []  # validations
        self.steps_curve: list[dict] = []  # test accuracy along the dual steps (--curve-images)
        self.milestones = set(curve_milestones())
        self.curve_test = load_mnist("test", device) if args.curve_images else None
        self.best_restored = False  # the dual phase ended on the best validated weights

    def kept(self) -> dict:
        """What the resume point keeps (``ResumePoint.keep``)."""
        return {
            "trainer": self.trainer,
            "batches": self.batches,
            "steps_done": self.steps_done,
            "clock": self.clock,
            "plateau": self.plateau,
            "stage": self.stages,
            "curve": self.curve,
            "steps_curve": self.steps_curve,
            "best_restored": (lambda: self.best_restored, lambda value: setattr(self, "best_restored", value)),
        }

    def weights(self) -> dict:
        return {"policy": self.policy.state_dict(), "core": self.core.state_dict()}

    def restore_best(self) -> None:
        if self.plateau.best_state is not None:
            self.policy.load_state_dict(self.plateau.best_state["policy"])
            self.core.load_state_dict(self.plateau.best_state["core"])

    def validate(self) -> None:
        """Validate the hard choice; the plateau keeps the best weights (and cuts the learning rates)."""
        args, step = self.args, self.steps_done["dual"]
        loss, accuracy = validate(self.policy, self.core, *self.validation, args.max_glimpses)
        best = self.plateau.update(loss, self.weights(), step)
        table = accuracy_table(accuracy)
        point = {"step": step, "seconds": round(self.clock["dual"], 1), "stage": self.stages.index}
        self.curve.append({**point, "loss": round(loss, 5), "accuracy": table, "best": best})
        say(
            f"validation at step {step:,}: loss {loss:.4f}, accuracy "
            f"{100 * table[str(args.max_glimpses)]:.1f}% after {args.max_glimpses} glimpses{' (best so far)' if best else ''}"
        )
        self.writer.add_scalar("validation/loss", loss, step)
        self.writer.add_scalar("validation/accuracy_last", table[str(args.max_glimpses)], step)
        if args.plateau_patience > 0:
            self.trainer.scale_learning_rates(self.plateau.scale)

    def record_curve(self) -> float:
        """Test accuracy on the curve's images at this dual step (eval mode); returns the seconds it took."""
        step = self.steps_done["dual"]
        if not self.args.curve_images or (self.steps_curve and self.steps_curve[-1]["step"] == step):
            return 0.0
        began = time.time()
        modes = [(module, module.training) for module in (self.policy, self.core)]
        self.policy.eval()
        self.core.eval()
        images, labels = (
            self.curve_test.images[: self.args.curve_images],
            self.curve_test.labels[: self.args.curve_images],
        )
        accuracy = accuracy_on(self.policy, self.core, images, labels, self.args.max_glimpses)
        for module, mode in modes:
            module.train(mode)
        self.steps_curve.append(curve_point(step, self.clock["dual"], accuracy))
        return time.time() - began

    def stage_over(self) -> bool:
        """Whether the current stage has had its share of steps or time, or stopped improving."""
        over = self.stages.over(self.steps_done["dual"], self.clock["dual"], self.planned["dual"], self.budget["dual"])
        return over or (self.args.plateau_patience > 0 and self.plateau.stop)

    def why_ended(self, phase: str) -> str:
        """Why ``phase`` stopped before its planned steps."""
        args = self.args
        if self.clock[phase] > self.budget[phase]:
            flag = "--max-train-seconds" if phase == "dual" and args.max_train_seconds > 0 else "--budget-seconds"
            return f"time budget of {self.budget[phase]:.3g} s reached ({flag})"
        if args.plateau_patience > 0 and self.plateau.stop:
            return f"last stage ({args.stages}) stopped improving on validation"
        return f"last stage ({args.stages}) ended"

    def anneal(self) -> None:
        """The pixel policy's noise and temperature and both learning rates for the next dual step."""
        args, policy = self.args, self.policy
        seconds = self.budget["dual"] if args.budget_seconds > 0 else None  # the schedules follow the time budget too
        done = self.stages.done(self.steps_done["dual"], self.planned["dual"], self.clock["dual"], seconds)
        if isinstance(policy, PixelAttention):
            policy.noise = self.stages.anneal(1.0, args.pixel_noise_final, done)
            final = args.pixel_temperature_final or args.pixel_temperature
            policy.temperature = args.pixel_temperature * (final / args.pixel_temperature) ** done
        if args.lr_final != 1.0:
            self.trainer.scale_learning_rates(1.0 - (1.0 - args.lr_final) * done)

    def step(self, phase: str, progress: tqdm) -> None:
        """One optimizer step of ``phase`` on the next batch."""
        batch = next(self.batches)
        images, labels = self.data.images[batch].float() / 255.0, self.data.labels[batch]
        global_step = sum(self.steps_done.values())
        if phase == "dual":
            self.anneal()
            stats = self.trainer.step(images, labels)
            if global_step % 50 == 0:
                self.writer.add_scalar("losses/perception", stats.perception_loss, global_step)
                self.writer.add_scalar("losses/attention", stats.attention_loss, global_step)
                self.writer.add_scalar("charts/train_accuracy_last", stats.accuracy_last, global_step)
                progress.set_postfix(loss=f"{stats.perception_loss:.3f}", acc=f"{stats.accuracy_last:.3f}")
        else:
            loss = self.trainer.readout_step(images, labels, self.readout)
            if global_step % 50 == 0:
                self.writer.add_scalar("losses/perception_nearest_readout", loss, global_step)
                progress.set_postfix(phase="readout", loss=f"{loss:.3f}")
        progress.update()
        self.steps_done[phase] += 1

    def train(self, resume: ResumePoint, progress: tqdm) -> None:
        """Both phases, each until its planned steps, its time budget or (dual, staged) its last stage ends."""
        args, steps_done, clock = self.args, self.steps_done, self.clock
        for phase, phase_steps in self.planned.items():
            phase_start = time.time() - clock[phase]
            if phase == "dual" and steps_done["dual"] == 0:
                phase_start += self.record_curve()  # step 0: where the dual epochs start from
            while steps_done[phase] < phase_steps:
                clock[phase] = time.time() - phase_start
                if clock[phase] > self.budget[phase]:
                    break
                if phase == "dual" and args.stages > 1 and self.stage_over():
                    if self.stages.last:
                        break
                    # The next stage starts from the best validated weights, with fresh optimizers.
                    self.stages.advance(steps_done["dual"], clock["dual"])
                    self.restore_best()
                    self.trainer.reset_optimizers()
                    self.plateau.new_stage()
                resume.step(sum(steps_done.values()))
                self.step(phase, progress)
                if phase == "dual" and steps_done["dual"] in self.milestones:
                    phase_start += self.record_curve()  # off the clock
                if phase == "dual" and self.validation is not None and steps_done["dual"] % args.val_every == 0:
                    self.validate()
            if phase == "dual":
                self.record_curve()  # the last dual step
            if steps_done[phase] < phase_steps:  # the stage's time budget, or its last stage, ended it
                end_stage(progress, STAGE_NAMES[phase], self.why_ended(phase), steps_done[phase], phase_steps)
            if phase == "dual" and self.validation is not None and not self.best_restored:
                if not self.curve or self.curve[-1]["step"] != steps_done["dual"]:
                    self.validate()  # the dual phase's last weights
                self.restore_best()  # the read-out and evaluation start from the best validated weights
                self.best_restored = True

    def results(self, run_id: str) -> dict:
        """What metrics.json records of the training (and the run's id, in its place among them)."""
        args, steps_done = self.args, self.steps_done
        results = {
            "epochs": args.epochs,
            "optimizer_steps": steps_done["dual"],
            "epochs_done": round(steps_done["dual"] / self.steps_per_epoch, 2),
            "readout_epochs": args.readout_epochs,
            "readout_steps": steps_done["readout"],
            **({"curve_images": args.curve_images, "curve": self.steps_curve} if args.curve_images else {}),
            "preset": args.preset,
            "run_id": run_id,
        }
        if self.validation is not None:
            results["validation"] = {
                "images": args.val_images,
                "best_step": self.plateau.best_step,
                "best_loss": round(self.plateau.best_loss, 5),
                "stages_run": self.stages.index + 1,
                "curve": self.curve,
            }
        return results


def main(args: Args, stop_after: int | None = None) -> dict:
    """Train, evaluate and write the run. ``stop_after``: act as if interrupted after that many
    optimizer steps (tests of --resume)."""
    check_args(args)
    device = start(args)
    resume = ResumePoint(args.out, args, stop_after)
    out = claim_output(args.out, args.overwrite)
    writer = SummaryWriter(str(log_folder(out)))

    data = load_mnist("train", device)
    train_count = len(data) - args.val_images  # the last --val-images are held out, from pretraining too
    core = build_core(args, MnistSplit(data.images[:train_count], data.labels[:train_count]), device, out)
    policy = build_policy(args, core, device)
    sampler = Sampler(args.sampler, gradient=args.sampler_gradient)
    trainer = DualOptimizerTrainer(
        policy,
        core,
        sampler,
        args.max_glimpses,
        attention_target=args.attention_target,
        perception_lr=args.perception_lr,
        attention_lr=args.attention_lr,
        repeat_penalty=args.pixel_repeat_penalty,
        pixel_estimator=args.pixel_estimator,
        attention_credit=args.attention_credit,
    )
    training = Training(args, data, trainer, writer, device)
    saved = resume.keep(**training.kept())
    began = time.time()
    progress = tqdm(
        total=sum(training.planned.values()),
        initial=sum(training.steps_done.values()),
        desc=f"differentiable --preset {args.preset}",
    )
    with resume:
        with progress:
            if not resume.trained:  # a run interrupted after training only evaluates and writes
                training.train(resume, progress)
        train_seconds = saved["train_seconds"] if resume.trained else time.time() - began
        resume.final(sum(training.steps_done.values()), train_seconds=train_seconds)
        metrics = evaluate_and_write(args, resume, out, writer, policy, core, sampler, training, train_seconds, device)
    print(summary(metrics, out, ["checkpoint.pt", "metrics.json", "glimpses.png", "tb/"]))
    if args.preset == "best":  # the same recipe, trained to its full schedule, ships with the package
        shipped = torch.load(AGENT_PATH, map_location="cpu", weights_only=True)["test_accuracy"]
        print(
            "\n".join(
                accuracy_lines(
                    f"the shipped agent ({AGENT_PATH.name}, --preset best --seed 0, full schedule):", shipped
                )
            )
        )
    return metrics


def evaluate_and_write(
    args: Args,
    resume: ResumePoint,
    out: Path,
    writer: SummaryWriter,
    policy: torch.nn.Module,
    core: PerceptionCore,
    sampler: Sampler,
    training: Training,
    train_seconds: float,
    device: torch.device,
) -> dict:
    """Evaluate on the 10,000 test images (nearest and the training read-out) and write the run
    (:func:`run.write_agent_run`)."""
    policy.eval()
    core.eval()
    print("evaluating on the 10,000 test images ...", flush=True)
    nearest = accuracy_by_glimpse(policy, core, args.max_glimpses, device=device)
    trained_readout = accuracy_by_glimpse(policy, core, args.max_glimpses, sampler=sampler, device=device)
    for budget, accuracy in accuracy_table(nearest).items():
        writer.add_scalar("eval/test_accuracy_nearest", accuracy, int(budget))
    agent = {"attention": "differentiable", "pixel": "differentiable-pixel", "fixed": "fixed-sequence"}[args.policy]
    return write_agent_run(
        resume,
        out,
        args,
        agent,
        policy,
        core,
        nearest,
        sampler.name,
        train_seconds,
        device,
        attention_target=args.attention_target if args.policy != "fixed" else None,
        test_accuracy_train_sampler=accuracy_table(trained_readout),
        **training.results(resume.run_id),
        before_metrics=writer.close,
    )


if __name__ == "__main__":
    run_main(main, parse_args())
