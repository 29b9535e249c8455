"""Train GDFS (greedy dynamic feature selection, Covert et al., ICML 2023) on MNIST's pixels, and
evaluate it through the environment like every other agent.

    python train/gdfs.py                                   # GDFS's full schedule (early stopping ends each stage)
    python train/gdfs.py --budget-seconds 2766 --seed 1    # the same, cut by a wall-clock budget
    python train/gdfs.py --resume                          # continue an interrupted run in --out

The recipe (agents.gdfs): 10,000 validation images drawn from the 60,000 training images (seed 0
whatever ``--seed``), the others trained on, batches of 128, pixels in [0, 1]. Stage 1 trains the
predictor on random masks; stage 2 trains the selector and the predictor together at each
temperature of ``geomspace(1, 0.1, 5)``. Every stage has a fresh Adam, a plateau scheduler on the
epoch's validation loss (factor 0.2, patience 2, min 1e-6), stops after more than 3 epochs without
a new best and ends on its best weights; the run ends on the stage-2 weights with the lowest
validation loss of the hard selections. ``--budget-seconds`` caps the training clock of both stages
(stage 1 at most ``--pretrain-share`` of it): the schedule runs as it would and stops where the
clock ends it, validating the weights it stopped on.

Writes ``OUT/gdfs.pt`` (both networks) and ``OUT/metrics.json``: ``test_accuracy`` is GDFS's own
predictor on the pixels GDFS chose, acting in the environment (``action_type="pixel"``,
``obs_type="record"``, ``nearest`` read-out) on the first ``--eval-images`` test images;
``test_accuracy_env_core`` is what the environment's packaged core reads from the same glimpses;
``curve`` holds the accuracy on ``--curve-images`` test images after log-spaced numbers of stage-2
optimizer steps (1, 2, 5, 10, 20, 50, ..., and the last), its ``seconds`` the training clock then.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from agents.cli import UserValueError, plain_text, refuse_retired, run_main
from agents.gdfs import (
    NUM_PIXELS,
    GdfsAgent,
    MaskedMLP,
    PixelSelector,
    accuracy_by_glimpse,
    accuracy_in_env,
    predictor_step,
    random_masks,
    save_gdfs,
    selector_step,
    validate_predictor,
    validate_selection,
)
from envs.data import ShuffledBatches, load_mnist
from run import (
    ResumableArgs,
    ResumePoint,
    accuracy_table,
    claim_output,
    curve_milestones,
    curve_point,
    say,
    start,
    summary,
    write_metrics,
)


@dataclass
class Args(ResumableArgs):
    max_glimpses: int = 50
    """greedy selections per training episode and per validation (GDFS: 50)"""
    eval_max_glimpses: int = 25
    """glimpses per test episode (accuracy reported after 1, 2, 5, 10, 25)"""
    batch_size: int = 128
    """images per optimizer step"""
    lr: float = 1e-3
    """Adam learning rate at the start of every stage"""
    mlp_hidden: int = 512
    """width of the two hidden layers of the predictor and of the selector"""
    dropout: float = 0.3
    """dropout after each hidden layer of both networks"""
    temperature_start: float = 1.0
    """Concrete temperature of the first selector stage"""
    temperature_end: float = 0.1
    """Concrete temperature of the last selector stage (geometric in between)"""
    temperature_stages: int = 5
    """selector stages (temperatures)"""
    patience: int = 2
    """epochs without a new best validation loss before the learning rate is cut by --factor"""
    factor: float = 0.2
    """learning-rate cut of the plateau scheduler"""
    min_lr: float = 1e-6
    """the plateau scheduler's lowest learning rate"""
    early_stop: int = 3
    """a stage ends after more than this many epochs without a new best validation loss"""
    max_epochs: int = 250
    """epochs per stage at most (a tiny run: 1)"""
    val_images: int = 10_000
    """validation images drawn from the training set (seed 0), held out of training"""
    train_images: int = 0
    """training images, from the rest of the training set (0 = all of the rest)"""
    eval_images: int = 10_000
    """test images of the final evaluation (the first N of the test set)"""
    curve_images: int = 2_000
    """test images of the accuracy curve along training (the first N; 0 = no curve)"""
    budget_seconds: float = 0.0
    """cap on the training clock of both stages in seconds (0 = none: early stopping ends each stage)"""
    pretrain_share: float = 0.2
    """with --budget-seconds: the share of it that stage 1 (the predictor alone) may take at most"""
    out: str = "runs/gdfs"
    """output folder"""


#: Stage-2 optimizer steps at which the curve is recorded.
MILESTONES = set(curve_milestones())
#: Stage names in the log and in metrics.json: 0 is the predictor's, k >= 1 the k-th temperature's.
PREDICTOR_STAGE = 0


def check_args(args: Args) -> None:
    """Refuse values out of range before any work, naming the flag and the fix."""
    positive = (
        "max_glimpses",
        "eval_max_glimpses",
        "batch_size",
        "mlp_hidden",
        "temperature_stages",
        "max_epochs",
        "val_images",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise UserValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    for name in ("max_glimpses", "eval_max_glimpses"):
        if getattr(args, name) > NUM_PIXELS:
            raise UserValueError(
                f"--{name.replace('_', '-')} must be <= {NUM_PIXELS} (the pixels), got {getattr(args, name)}."
            )
    for name in ("lr", "temperature_start", "temperature_end", "min_lr"):
        if not getattr(args, name) > 0:
            raise UserValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}.")
    if not 0 < args.factor < 1:
        raise UserValueError(f"--factor must be in (0, 1), got {args.factor}.")
    if not 0 <= args.dropout < 1:
        raise UserValueError(f"--dropout must be in [0, 1), got {args.dropout}.")
    if args.patience < 0 or args.early_stop < 0:
        raise UserValueError(f"--patience and --early-stop must be >= 0, got {args.patience} and {args.early_stop}.")
    if args.budget_seconds < 0:
        raise UserValueError(f"--budget-seconds must be >= 0 (0 = none), got {args.budget_seconds}.")
    if not 0 < args.pretrain_share < 1:
        raise UserValueError(f"--pretrain-share must be in (0, 1), got {args.pretrain_share}.")
    rest = 60_000 - args.val_images
    if rest < args.batch_size:
        raise UserValueError(
            f"--val-images {args.val_images} leaves {rest} training images, fewer than one batch "
            f"(--batch-size {args.batch_size}); pass fewer --val-images."
        )
    if not 0 <= args.train_images <= rest:
        raise UserValueError(
            f"--train-images must be between 0 (all the rest) and {rest} (60,000 less --val-images), got {args.train_images}."
        )
    if 0 < args.train_images < args.batch_size:
        raise UserValueError(
            f"--train-images {args.train_images} is less than one batch (--batch-size {args.batch_size}); pass more."
        )
    for name in ("eval_images", "curve_images"):
        low = 1 if name == "eval_images" else 0
        if not low <= getattr(args, name) <= 10_000:
            raise UserValueError(
                f"--{name.replace('_', '-')} must be between {low} and 10000 (the test images), got {getattr(args, name)}."
            )


def flat(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(N, 28, 28)`` as ``(N, 784)`` in ``[0, 1]``."""
    return images.flatten(1).float() / 255.0


class Training:
    """GDFS's two stages on the training images, with everything an uninterrupted run holds at a batch
    boundary: the networks, the stage's optimizer and plateau scheduler, the batch stream and
    :attr:`run` (the position, the best weights, the validations, the curve and the clock)."""

    def __init__(self, args: Args, device: torch.device) -> None:
        self.args = args
        # Data: the validation images drawn from the training set with seed 0, the training images from the rest.
        data = load_mnist("train", device)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).to(device)
        val_index = order[: args.val_images]
        train_index = order[args.val_images :][: args.train_images or None]
        self.train_images, self.train_labels = data.images[train_index], data.labels[train_index]
        self.val_images, self.val_labels = flat(data.images[val_index]), data.labels[val_index]
        self.val_masks = random_masks(args.val_images, "cpu", torch.Generator().manual_seed(0)).to(device)
        test = load_mnist("test", device)
        self.curve_images, self.curve_labels = flat(test.images[: args.curve_images]), test.labels[: args.curve_images]
        self.steps_per_epoch = len(train_index) // args.batch_size
        self.temperatures = np.geomspace(args.temperature_start, args.temperature_end, args.temperature_stages).tolist()
        self.last_stage = args.temperature_stages

        self.predictor = MaskedMLP(10, args.mlp_hidden, args.dropout).to(device)
        self.selector = PixelSelector(args.mlp_hidden, args.dropout).to(device)
        self.batches = ShuffledBatches(len(train_index), args.batch_size, device)
        self.run = {
            "stage": PREDICTOR_STAGE,  # 0: the predictor alone; k >= 1: the k-th temperature
            "epoch": 0,  # epochs validated in this stage
            "batch": 0,  # batches of the current epoch done
            "predictor_steps": 0,
            "selector_steps": 0,
            "bad_epochs": 0,
            "stage_best": self.weights(),  # the stage's weights of lowest validation loss
            "best": None,  # the stage-2 weights of lowest hard-selection validation loss, and where
            "best_hard_loss": math.inf,
            "best_at": None,
            "epochs": [],  # epochs run per stage
            "validation": [],
            "curve": [],
            "clock": 0.0,  # training seconds (both stages, curve evaluations excluded)
            "stage_clock": 0.0,  # the clock when the stage began
            "stopped": None,  # why training ended
        }
        self.optimizer, self.plateau = self.fresh_optimizer(PREDICTOR_STAGE)
        self.clock_start = time.time()  # the training clock reads time.time() - clock_start

    def kept(self) -> dict:
        """What the resume point keeps (``ResumePoint.keep``), in the order it restores them."""
        return {
            "run": self.run,
            "weights": (self.weights, self.load_weights),
            "optimizer": (lambda: self.optimizer.state_dict(), self.load_optimizer),
            "plateau": (lambda: self.plateau.state_dict(), lambda state: self.plateau.load_state_dict(state)),
            "batches": self.batches,
        }

    def load_optimizer(self, state: dict) -> None:
        """The optimizer and scheduler of the saved stage, the optimizer's state loaded."""
        self.optimizer, self.plateau = self.fresh_optimizer(min(self.run["stage"], self.last_stage))
        self.optimizer.load_state_dict(state)

    def weights(self) -> dict:
        return {
            "predictor": {k: v.detach().clone() for k, v in self.predictor.state_dict().items()},
            "selector": {k: v.detach().clone() for k, v in self.selector.state_dict().items()},
        }

    def load_weights(self, state: dict) -> None:
        self.predictor.load_state_dict(state["predictor"])
        self.selector.load_state_dict(state["selector"])

    def fresh_optimizer(self, stage: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
        parameters = list(self.predictor.parameters())
        if stage != PREDICTOR_STAGE:
            parameters += list(self.selector.parameters())
        optimizer = torch.optim.Adam(parameters, lr=self.args.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.args.factor, patience=self.args.patience, min_lr=self.args.min_lr
        )
        return optimizer, plateau

    def temperature(self) -> float:
        return self.temperatures[self.run["stage"] - 1]

    def record_curve(self) -> None:
        """Test accuracy on the curve's images at this stage-2 step (its time off the clock)."""
        run = self.run
        if self.args.curve_images == 0 or (run["curve"] and run["curve"][-1]["step"] == run["selector_steps"]):
            return
        paused = time.time()
        accuracy = accuracy_by_glimpse(
            self.selector, self.predictor, self.curve_images, self.curve_labels, self.args.eval_max_glimpses
        )
        run["curve"].append(curve_point(run["selector_steps"], run["clock"], accuracy))
        self.clock_start += time.time() - paused

    def end_epoch(self) -> None:
        """Validate the epoch's weights: the plateau scheduler, the stage's best, the run's best."""
        run = self.run
        entry = {"stage": run["stage"], "epoch": run["epoch"] + 1, "batches": run["batch"]}
        if run["stage"] == PREDICTOR_STAGE:
            loss = validate_predictor(self.predictor, self.val_images, self.val_labels, self.val_masks)
        else:
            loss, hard = validate_selection(
                self.selector,
                self.predictor,
                self.val_images,
                self.val_labels,
                self.args.max_glimpses,
                self.temperature(),
            )
            entry.update(temperature=round(self.temperature(), 5), hard_loss=round(hard, 5))
            if hard < run["best_hard_loss"]:
                run.update(best=self.weights(), best_hard_loss=hard, best_at={**entry, "step": run["selector_steps"]})
        self.plateau.step(loss)
        if loss == self.plateau.best:
            run.update(stage_best=self.weights(), bad_epochs=0)
        else:
            run["bad_epochs"] += 1
        entry.update(loss=round(loss, 5), lr=self.optimizer.param_groups[0]["lr"], seconds=round(run["clock"], 1))
        run["validation"].append(entry)
        hard_text = f", hard-selection loss {entry['hard_loss']:.4f}" if "hard_loss" in entry else ""
        say(f"stage {run['stage']} epoch {entry['epoch']}: validation loss {loss:.4f}{hard_text}, lr {entry['lr']:.2g}")
        run.update(epoch=run["epoch"] + 1, batch=0)

    def end_stage(self, reason: str) -> None:
        """The stage ends on its best weights; the next starts with fresh optimizers and batches."""
        run = self.run
        self.load_weights(run["stage_best"])
        run["epochs"].append(run["epoch"])
        say(f"stage {run['stage']} ended after {run['epoch']} epoch(s): {reason}")
        run.update(stage=run["stage"] + 1, epoch=0, batch=0, bad_epochs=0, stage_clock=run["clock"])
        if run["stage"] <= self.last_stage:
            self.optimizer, self.plateau = self.fresh_optimizer(run["stage"])
            run["stage_best"] = self.weights()
            self.batches.load_state_dict({"order": None, "position": 0})
            if run["stage"] == 1:
                self.record_curve()  # step 0: the pretrained predictor and the untrained selector

    def step(self) -> None:
        """One optimizer step of the current stage on the next batch."""
        run, batch = self.run, next(self.batches)
        images, labels = flat(self.train_images[batch]), self.train_labels[batch]
        if run["stage"] == PREDICTOR_STAGE:
            predictor_step(self.predictor, self.optimizer, images, labels)
            run["predictor_steps"] += 1
        else:
            selector_step(
                self.selector,
                self.predictor,
                self.optimizer,
                images,
                labels,
                self.args.max_glimpses,
                self.temperature(),
            )
            run["selector_steps"] += 1
            if run["selector_steps"] in MILESTONES:
                self.record_curve()
        run["batch"] += 1

    def train(self, resume: ResumePoint) -> float:
        """Both stages, until every stage has ended or the time budget is spent; ends on the stage-2
        weights of lowest hard-selection validation loss. Returns the training seconds."""
        args, run = self.args, self.run
        budget = args.budget_seconds or math.inf
        self.clock_start = time.time() - run["clock"]
        while run["stage"] <= self.last_stage:
            run["clock"] = time.time() - self.clock_start
            if run["clock"] > budget:
                if run["batch"] > 0 or run["epoch"] == 0:
                    self.end_epoch()  # the weights the clock stopped on are validated too
                run["stopped"] = f"time budget of {budget:g} s reached (--budget-seconds)"
                self.load_weights(run["stage_best"])
                run["epochs"].append(run["epoch"])
                break
            if run["stage"] == PREDICTOR_STAGE and run["clock"] > args.pretrain_share * budget:
                if run["batch"] > 0 or run["epoch"] == 0:
                    self.end_epoch()
                self.end_stage(f"its share of the time budget ({args.pretrain_share:g} x {budget:g} s) reached")
                continue
            if run["batch"] == self.steps_per_epoch:
                self.end_epoch()
                if run["bad_epochs"] > args.early_stop:
                    self.end_stage(f"more than {args.early_stop} epochs without a new best validation loss")
                elif run["epoch"] >= args.max_epochs:
                    self.end_stage(f"--max-epochs {args.max_epochs} reached")
                continue
            resume.step(run["predictor_steps"] + run["selector_steps"])
            self.step()
        run["clock"] = time.time() - self.clock_start  # the last validation included
        run["stopped"] = run["stopped"] or "every stage ended"
        if run["stage"] > PREDICTOR_STAGE:
            self.record_curve()  # the last step's weights
        if run["best"] is not None:
            self.load_weights(run["best"])
        return run["clock"]


def main(args: Args, stop_after: int | None = None) -> dict:
    """Train both stages, evaluate through the environment and write the run. ``stop_after``: act as
    if interrupted after that many optimizer steps of both stages (tests of --resume)."""
    check_args(args)
    device = start(args)
    resume = ResumePoint(args.out, args, stop_after)
    out = claim_output(args.out, args.overwrite)
    training = Training(args, device)
    saved = resume.keep(**training.kept())
    with resume:
        train_seconds = saved["train_seconds"] if resume.trained else training.train(resume)
        run = training.run
        resume.final(run["predictor_steps"] + run["selector_steps"], train_seconds=train_seconds)
        metrics = evaluate_and_write(args, resume, out, training, train_seconds, device)
    print(summary(metrics, out, ["gdfs.pt", "metrics.json"]))
    print("  the environment's packaged core on the same glimpses:")
    print("  accuracy " + "".join(f"{100 * v:>6.1f}" for v in metrics["test_accuracy_env_core"].values()))
    return metrics


def evaluate_and_write(
    args: Args, resume: ResumePoint, out: Path, training: Training, train_seconds: float, device: torch.device
) -> dict:
    """Evaluate through the environment, write ``gdfs.pt`` and, last, metrics.json."""
    run = training.run
    print(f"evaluating through the environment on {args.eval_images:,} test images ...", flush=True)
    agent = GdfsAgent(training.selector, training.predictor)
    own, core = accuracy_in_env(agent, args.eval_max_glimpses, device=device, limit=args.eval_images)
    save_gdfs(out / "gdfs.pt", training.selector, training.predictor, args=vars(args), run_id=resume.run_id)
    return resume.finish(
        lambda: write_metrics(
            out / "metrics.json",
            "gdfs",
            own,
            "nearest",
            train_seconds,
            str(device),
            args.seed,
            prediction="GDFS's own predictor on the pixels GDFS chose, acting in the environment",
            test_accuracy_env_core=accuracy_table(core),
            eval_images=args.eval_images,
            optimizer_steps=run["selector_steps"],
            predictor_steps=run["predictor_steps"],
            epochs_per_stage=run["epochs"],
            temperatures=[round(t, 5) for t in training.temperatures],
            stopped=run["stopped"],
            budget_seconds=args.budget_seconds,
            best=None if run["best_at"] is None else {**run["best_at"], "hard_loss": round(run["best_hard_loss"], 5)},
            validation=run["validation"],
            curve_images=args.curve_images,
            curve=run["curve"],
            run_id=resume.run_id,
        )
    )


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--eval-glimpses": "--eval-max-glimpses",
    "--hidden": "--mlp-hidden",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
