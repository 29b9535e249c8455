"""The staged training schedule of GDFS (Covert et al., ICML 2023), for the differentiable agent.

GDFS trains its selector and predictor in stages: the relaxation's temperature is annealed
geometrically from stage to stage (1 -> 0.1 in 5 stages), each stage starts a fresh Adam, a plateau
of the validation loss cuts the learning rate (factor 0.2, patience 2) and ends the stage (early
stopping), and the weights kept are those with the best validation loss *with the hard (argmax)
choice*, the choice the selector makes when it acts. Here:

* :func:`stage_value`: a quantity annealed geometrically over the stages, constant within one;
* :func:`validate`: the hard choice's loss and accuracy on held-out images (eval mode, ``nearest``
  reads: exactly what evaluation runs);
* :class:`Plateau`: the learning-rate cuts, the early stopping and the best weights, fed one
  validation loss at a time, with a ``state_dict`` for resuming;
* :class:`Stages`: where training stands among the stages, and how far the annealed quantities
  (noise, temperature, learning rates) have gone, with a ``state_dict`` for resuming.

``train/differentiable.py --stages S --val-images N --plateau-patience P`` (the ``ablation-gdfs-schedule`` preset, docs/studies/gdfs-schedule.md)
runs them.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from agents.rollout import GlimpsePolicy, run_episodes
from envs.perception import PerceptionCore, perception_loss
from envs.sampler import Sampler


def stage_value(start: float, end: float, stage: int, stages: int) -> float:
    """``start * (end / start) ** (stage / (stages - 1))``: ``start`` in stage 0, ``end`` in the last
    (``start`` throughout when ``stages == 1``); both must be > 0."""
    if not (start > 0 and end > 0):
        raise ValueError(f"stage_value anneals between positive values, got {start} and {end}.")
    if not 0 <= stage < stages:
        raise ValueError(f"stage {stage} is not one of the {stages} stages.")
    return start if stages == 1 else start * (end / start) ** (stage / (stages - 1))


@torch.no_grad()
def validate(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    batch_size: int = 2500,
) -> tuple[float, torch.Tensor]:
    """The hard choice on held-out images: ``(mean cross-entropy over glimpses and images, accuracy
    after each glimpse (T,))``, with the policy and the core in eval mode (restored after) and the
    ``nearest`` read-out.

    :param images: ``uint8`` ``(N, 28, 28)``; :param labels: ``(N,)``.
    """
    modes = [(module, module.training) for module in (policy, core) if isinstance(module, nn.Module)]
    for module, _ in modes:
        module.eval()
    loss, correct = 0.0, torch.zeros(max_glimpses, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        batch, target = images[start : start + batch_size].float() / 255.0, labels[start : start + batch_size]
        logits = run_episodes(policy, core, Sampler("nearest"), batch, max_glimpses).logits
        loss += float(perception_loss(logits, target)) * target.shape[0]
        correct += (logits.argmax(dim=-1) == target).float().sum(dim=1)
    for module, mode in modes:
        module.train(mode)
    return loss / images.shape[0], correct / images.shape[0]


class Plateau:
    """Learning-rate cuts, early stopping and the best weights, from one validation loss at a time
    (:meth:`update`), as GDFS runs ``ReduceLROnPlateau`` and its early stopping within a stage.

    * After more than ``patience`` validations in a row without a new best of the stage, the
      learning-rate :attr:`scale` is multiplied by ``factor`` (not below ``min_scale``) and the count
      restarts (``ReduceLROnPlateau``'s rule, relative threshold ``1e-4``).
    * After more than ``patience + 1`` validations without a new best of the stage, :attr:`stop` is
      set: the stage is over.
    * :attr:`best_state` holds a copy of the weights with the lowest loss of the whole run.

    :meth:`new_stage` resets the stage's best, the counts and the scale (a fresh optimizer).

    :param patience: validations without improvement before a cut (>= 0).
    :param factor: the cut, in ``(0, 1)``.
    :param min_scale: the smallest scale (GDFS: ``min_lr = 1e-5`` for ``lr = 1e-3``).
    """

    THRESHOLD = 1e-4

    def __init__(self, patience: int = 2, factor: float = 0.2, min_scale: float = 1e-2) -> None:
        if patience < 0:
            raise ValueError(f"Plateau patience must be >= 0, got {patience}.")
        if not 0 < factor < 1:
            raise ValueError(f"Plateau factor must be in (0, 1), got {factor}.")
        self.patience, self.factor, self.min_scale = patience, factor, min_scale
        self.best_loss = math.inf
        self.best_state: dict | None = None
        self.best_step = -1
        self.new_stage()

    def new_stage(self) -> None:
        """A fresh stage: no best of the stage yet, counts at zero, learning-rate scale 1."""
        self.stage_best, self.since_cut, self.since_best, self.scale = math.inf, 0, 0, 1.0

    @property
    def stop(self) -> bool:
        """Whether the stage has gone more than ``patience + 1`` validations without a new best."""
        return self.since_best > self.patience + 1

    def update(self, loss: float, weights: dict, step: int) -> bool:
        """Feed one validation ``loss`` of the weights ``weights`` (a ``state_dict``-like dict, copied
        if it is the run's best) at optimizer step ``step``; returns whether it is the run's best."""
        if not math.isfinite(loss):
            raise ValueError(f"The validation loss is {loss}: training diverged.")
        if loss < self.stage_best * (1.0 - self.THRESHOLD):
            self.stage_best, self.since_cut, self.since_best = loss, 0, 0
        else:
            self.since_cut += 1
            self.since_best += 1
            if self.since_cut > self.patience:
                self.scale, self.since_cut = max(self.scale * self.factor, self.min_scale), 0
        if loss < self.best_loss:
            self.best_loss, self.best_state, self.best_step = loss, copy.deepcopy(weights), step
            return True
        return False

    def state_dict(self) -> dict:
        return {
            name: getattr(self, name)
            for name in ("best_loss", "best_state", "best_step", "stage_best", "since_cut", "since_best", "scale")
        }

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class Stages:
    """Where training stands among ``count`` stages, each given at most a ``1/count`` share of the
    steps and of the seconds: the current stage, and the step and the clock at which it began.

    :meth:`done` says how far the annealed quantities have gone, in ``[0, 1]``: with one stage, the
    share of the steps taken (or of the seconds, whichever is larger, with a time budget); with
    several, the stage's place among them (constant within a stage, as GDFS anneals).

    :param count: the stages (>= 1).
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"Stages needs at least one stage, got {count}.")
        self.count, self.index, self.start_step, self.start_clock = count, 0, 0, 0.0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def over(self, step: int, clock: float, steps: int, seconds: float) -> bool:
        """Whether the current stage has had its share of ``steps`` or ``seconds``, at ``step`` and ``clock``."""
        return step - self.start_step >= steps // self.count or clock - self.start_clock > seconds / self.count

    def advance(self, step: int, clock: float) -> None:
        """The next stage begins at ``step`` and ``clock``."""
        self.index, self.start_step, self.start_clock = self.index + 1, step, clock

    def done(self, step: int, steps: int, clock: float = 0.0, seconds: float | None = None) -> float:
        """How far the annealing has gone at ``step`` of ``steps`` (and ``clock`` of a time budget of
        ``seconds``, if any): ``index / (count - 1)`` with several stages."""
        if self.count > 1:
            return self.index / (self.count - 1)
        done = step / steps
        return done if seconds is None else min(1.0, max(done, clock / seconds))

    def anneal(self, start: float, end: float, done: float) -> float:
        """From ``start`` towards ``end``: geometric from stage to stage (:func:`stage_value`) with several
        stages, linear in ``done`` with one."""
        if self.count > 1:
            return stage_value(start, end, self.index, self.count)
        return start - (start - end) * done

    def state_dict(self) -> dict:
        return {"index": self.index, "start_step": self.start_step, "start_clock": self.start_clock}

    def load_state_dict(self, state: dict) -> None:
        self.index, self.start_step, self.start_clock = state["index"], state["start_step"], state["start_clock"]
