"""The differentiable end-to-end glimpse agent and its two optimizers.

Per glimpse (``agents.rollout.run_episodes``)::

    action_t = attention(concat(histogram_t, prediction_t))           (B, 2) in [-1, 1]
    value_t  = sampler(image, (action_t + 1) / 2 * 27)                 differentiable in action_t
    histogram_{t+1} = histogram_t + SOHE(W [i, j, value_t, histogram_t] + b)
    logits_{t+1}    = head(histogram_{t+1})

Two losses over the logits of all glimpses, two optimizers:

* **perception** (RecurrentSoftOrdering + head): ``CE(logits_t, y)``, the true class.
* **attention** (attention network only): ``CE(logits_t, target_t)`` where ``target_t`` is

  - ``"argmin"``: the currently least probable class, ``argmin(logits_t)``;
  - ``"second"``: the second most probable class;
  - ``"label"``: the true class ``y`` (plain end-to-end gradient of the perception loss);

  or, instead of a cross-entropy toward a class,

  - ``"margin"``: ``softplus(max_{k != y} z_k - z_y)``, the evidence against the most confusable
    wrong class (Chernoff's sequential design, smoothed): glimpses that separate the true class from
    its closest rival;
  - ``"entropy"``: ``H(softmax(z_t))``, the entropy of the prediction, label-free (the expected
    information gain of a glimpse);

  or, for a :class:`~agents.pixel_attention.PixelAttention` with ``exploration="epsilon"`` (its
  scores a value head, acting by argmax, exploring epsilon-greedily),

  - ``"value"``: ``(s_t(p_t) - (CE_{t-1} - CE_t))^2``, the score of the pixel read regressed on the
    drop of the true class's cross-entropy it brought (``CE_{-1} = ln 10``, the uniform prediction the
    first glimpse is chosen from), as DIME (Gadgil et al., ICLR 2024) estimates each feature's
    conditional mutual information with the label.

  Targets (and the value target's loss drops) are taken from detached logits: a stated decision, the target is a label, not a path for
  gradients. ``argmin`` and ``second`` are the original design's targets; raising the least likely
  class rewards uninformative glimpses (docs/studies/attention-targets.md).

Each loss is differentiated with respect to its own optimizer's parameters only
(``torch.autograd.grad``), so neither gradient can leak into the other's parameters.

Gradients reach the attention network by two paths: through the sampled value (the sampler's
gradient with respect to the location) and through the location itself, which the core reads as a
feature. Dead zones: with ``bilinear`` the first path is zero wherever the 2x2 neighbourhood is flat
(most of the background). Options that address it (docs/studies/differentiable-agent-fixes.md): the
``gaussian`` sampler (wide kernel), a straight-through sampler (``Sampler("nearest", gradient=...)``)
and per-glimpse offsets (``AttentionNetwork(step_bias=True)``). A :class:`~agents.pixel_attention.PixelAttention` policy
removes the local view altogether: it chooses among all pixels, and its relaxed choice gives every
candidate pixel a gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from agents.pixel_attention import PixelAttention
from agents.rollout import (
    CREDITS,
    PIXEL_ESTIMATORS,
    PixelReader,
    run_episodes,
)
from envs.perception import PerceptionCore, perception_loss
from envs.sampler import Sampler

ATTENTION_TARGETS = ("argmin", "second", "label", "margin", "entropy", "value")


def attention_loss(logits: torch.Tensor, labels: torch.Tensor, target: str) -> torch.Tensor:
    """The attention optimizer's loss from ``logits`` ``(T, B, 10)``, averaged over glimpses and batch
    (every target but ``"value"``, which needs the policy's scores: :func:`value_loss`)."""
    if target == "margin":
        true = logits.gather(-1, labels.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1)
        wrong = logits.scatter(-1, labels.expand(logits.shape[0], -1).unsqueeze(-1), float("-inf"))
        return nn.functional.softplus(wrong.max(dim=-1).values - true).mean()
    if target == "entropy":
        log_p = torch.log_softmax(logits, dim=-1)
        return -(log_p.exp() * log_p).sum(dim=-1).mean()
    return perception_loss(logits, attention_targets(logits, labels, target))


def value_loss(chosen_scores: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The ``"value"`` target: mean of ``(chosen_scores_t - (CE_{t-1} - CE_t))^2`` over glimpses and
    batch, with ``CE_t`` the cross-entropy of ``logits`` ``(T, B, 10)`` toward ``labels`` ``(B,)`` after
    glimpse ``t`` (detached) and ``CE_{-1} = ln 10``; ``chosen_scores`` ``(T, B)``."""
    with torch.no_grad():
        ce = nn.functional.cross_entropy(logits.flatten(0, 1), labels.repeat(logits.shape[0]), reduction="none")
        ce = ce.view(logits.shape[:2])
        before = torch.cat([torch.full_like(ce[:1], math.log(logits.shape[-1])), ce[:-1]])
    return (chosen_scores - (before - ce)).pow(2).mean()


def attention_targets(logits: torch.Tensor, labels: torch.Tensor, target: str) -> torch.Tensor:
    """Class targets ``(T, B)`` for the attention loss from ``logits`` ``(T, B, 10)`` (no gradient)."""
    if target == "argmin":
        return logits.detach().argmin(dim=-1)
    if target == "second":
        return logits.detach().topk(2, dim=-1).indices[..., 1]
    if target == "label":
        return labels.expand(logits.shape[0], -1)
    raise ValueError(f"Unknown attention target {target!r}; valid targets are {list(ATTENTION_TARGETS)}.")


@dataclass
class StepStats:
    """Losses and training-sampler accuracy of one batch."""

    perception_loss: float
    attention_loss: float
    accuracy_last: float


class DualOptimizerTrainer:
    """Trains ``policy`` and ``core`` together, each with its own optimizer and loss.

    :param policy: the attention network (or a :class:`~agents.baselines.FixedSequence`); anything
        with parameters that maps observations to actions.
    :param core: the shared perception core.
    :param sampler: the training read-out (``bilinear`` by default; ``gaussian`` avoids dead zones).
    :param max_glimpses: episode length ``T``.
    :param attention_target: ``"argmin"``, ``"second"``, ``"label"``, ``"margin"``, ``"entropy"`` or
        ``"value"`` (which needs a ``PixelAttention(exploration="epsilon")``).
    :param perception_lr: Adam learning rate of the perception optimizer.
    :param attention_lr: Adam learning rate of the attention optimizer.
    :param repeat_penalty: weight of a :class:`~agents.pixel_attention.PixelAttention`'s
        :meth:`~agents.pixel_attention.PixelAttention.repeat_probability` in the attention loss (0 = off).
    :param pixel_estimator: what learns from a :class:`~agents.rollout.PixelReader`'s relaxed choice:
        ``"mixture"`` (the weights, the core and the earlier glimpses) or ``"taken"`` (the weights only;
        the core learns from the glimpses taken). See :func:`envs.episode.step`.
    :param attention_credit: which losses train a glimpse's choice: ``"episode"`` (its own and every
        later glimpse's) or ``"greedy"`` (its own only, as GDFS). The core
        learns from the whole episode either way. See :func:`agents.rollout.run_episodes`.
    """

    def __init__(
        self,
        policy: nn.Module,
        core: PerceptionCore,
        sampler: Sampler,
        max_glimpses: int,
        attention_target: str = "argmin",
        perception_lr: float = 1e-3,
        attention_lr: float = 1e-3,
        repeat_penalty: float = 0.0,
        pixel_estimator: str = "mixture",
        attention_credit: str = "episode",
    ) -> None:
        if attention_target not in ATTENTION_TARGETS:
            raise ValueError(
                f"Unknown attention target {attention_target!r}; valid targets are {list(ATTENTION_TARGETS)}."
            )
        value_policy = isinstance(policy, PixelAttention) and policy.exploration == "epsilon"
        if (attention_target == "value") != value_policy:
            raise ValueError(
                "attention_target='value' trains a PixelAttention(exploration='epsilon') (its scores a value "
                "head) and such a policy learns only from it; got attention_target="
                f"{attention_target!r} with {type(policy).__name__}"
                + (f"(exploration={policy.exploration!r})." if isinstance(policy, PixelAttention) else ".")
            )
        self.policy, self.core, self.sampler = policy, core, sampler
        self.max_glimpses = max_glimpses
        self.attention_target = attention_target
        if repeat_penalty < 0 or (repeat_penalty > 0 and not isinstance(policy, PixelAttention)):
            raise ValueError(
                f"repeat_penalty must be >= 0 and needs a PixelAttention policy; got {repeat_penalty} "
                f"with {type(policy).__name__}."
            )
        if repeat_penalty > 0 and policy.memory != "none":
            raise ValueError(
                "repeat_penalty is for PixelAttention(memory='none'); with a memory it never reads a pixel twice."
            )
        self.repeat_penalty = repeat_penalty
        if pixel_estimator not in PIXEL_ESTIMATORS:
            raise ValueError(f"Unknown pixel_estimator {pixel_estimator!r}; valid values are {list(PIXEL_ESTIMATORS)}.")
        if pixel_estimator != "mixture" and not isinstance(policy, PixelReader):
            raise ValueError(
                f"pixel_estimator={pixel_estimator!r} is for a policy that chooses pixels (PixelReader, e.g. "
                f"PixelAttention), not {type(policy).__name__}; leave it at 'mixture'."
            )
        self.pixel_estimator = pixel_estimator
        if attention_credit not in CREDITS:
            raise ValueError(f"Unknown attention_credit {attention_credit!r}; valid values are {list(CREDITS)}.")
        self.attention_credit = attention_credit
        self.perception_params = list(core.parameters())
        self.attention_params = list(policy.parameters())
        self.perception_lr, self.attention_lr = perception_lr, attention_lr
        self.perception_optimizer = torch.optim.Adam(self.perception_params, lr=perception_lr)
        self.attention_optimizer = torch.optim.Adam(self.attention_params, lr=attention_lr)

    def state_dict(self) -> dict:
        """The policy, the core and both optimizers, for resuming (:meth:`load_state_dict`)."""
        return {
            "policy": self.policy.state_dict(),
            "core": self.core.state_dict(),
            "perception_optimizer": self.perception_optimizer.state_dict(),
            "attention_optimizer": self.attention_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.core.load_state_dict(state["core"])
        self.perception_optimizer.load_state_dict(state["perception_optimizer"])
        self.attention_optimizer.load_state_dict(state["attention_optimizer"])

    def reset_optimizers(self) -> None:
        """Fresh Adam optimizers at the initial learning rates (a new stage of a staged schedule)."""
        self.perception_optimizer = torch.optim.Adam(self.perception_params, lr=self.perception_lr)
        self.attention_optimizer = torch.optim.Adam(self.attention_params, lr=self.attention_lr)

    def scale_learning_rates(self, scale: float) -> None:
        """Set both optimizers' learning rates to ``scale`` times those they were built with (a schedule)."""
        if not scale > 0:
            raise ValueError(f"The learning-rate scale must be > 0, got {scale}.")
        for optimizer, base in (
            (self.perception_optimizer, self.perception_lr),
            (self.attention_optimizer, self.attention_lr),
        ):
            for group in optimizer.param_groups:
                group["lr"] = base * scale

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Roll out and return ``(perception loss, attention loss, logits (T, B, 10))``."""
        episode = run_episodes(
            self.policy, self.core, self.sampler, images, self.max_glimpses, self.pixel_estimator, self.attention_credit
        )
        logits = episode.logits
        perception = perception_loss(logits, labels)
        if self.attention_target == "value":
            # What the policy saw and read is detached (a stated decision): the value head regresses
            # the loss drops of the glimpses taken; it is not a path into the core.
            chosen = self.policy.chosen_scores(episode.observations.detach(), episode.coords.detach(), episode.records)
            attention = value_loss(chosen, logits, labels)
        else:
            attention = attention_loss(logits, labels, self.attention_target)
        if self.repeat_penalty > 0:
            # Observations and choices are detached (a stated decision): the term scores the policy's
            # choices given what it saw; it is not a path into the core.
            repeats = self.policy.repeat_probability(episode.observations.detach(), episode.coords.detach())
            attention = attention + self.repeat_penalty * repeats
        return perception, attention, episode.logits

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> StepStats:
        """One update of both optimizers on a batch of ``images`` ``(B, 28, 28)`` in ``[0, 1]``."""
        perception, attention, logits = self.losses(images, labels)
        perception_grads = torch.autograd.grad(perception, self.perception_params, retain_graph=True)
        attention_grads = torch.autograd.grad(attention, self.attention_params, allow_unused=True)
        # allow_unused: a policy parameter that no glimpse used this batch keeps grad None (Adam skips it).
        _apply(self.perception_optimizer, self.perception_params, perception_grads)
        _apply(self.attention_optimizer, self.attention_params, attention_grads)
        accuracy = (logits[-1].argmax(dim=-1) == labels).float().mean()
        return StepStats(float(perception.detach()), float(attention.detach()), float(accuracy))

    def readout_step(self, images: torch.Tensor, labels: torch.Tensor, readout: Sampler) -> float:
        """One perception-optimizer step on the glimpses the policy takes when the core reads with
        ``readout`` (e.g. ``nearest``, the evaluation read-out); the policy is not trained.

        The rollout runs without gradients (the policy, its noise-free form, only chooses where to
        look); the core then re-reads the recorded ``(coords, values)`` with gradients
        (:meth:`~envs.perception.PerceptionCore.replay`), so the perception loss reaches the core
        alone. Returns that loss.
        """
        # The policy acts as it will in evaluation: eval mode (a PixelAttention then takes its best
        # pixel rather than a Gumbel sample), restored afterwards.
        mode = self.policy.training
        with torch.no_grad():
            episode = run_episodes(self.policy.eval(), self.core, readout, images, self.max_glimpses)
        self.policy.train(mode)
        logits = self.core.replay(episode.coords.transpose(0, 1), episode.values.transpose(0, 1))
        loss = perception_loss(logits, labels)
        _apply(self.perception_optimizer, self.perception_params, torch.autograd.grad(loss, self.perception_params))
        return float(loss.detach())


def _apply(
    optimizer: torch.optim.Optimizer, params: list[nn.Parameter], grads: tuple[torch.Tensor | None, ...]
) -> None:
    """Set ``params``' gradients to ``grads`` (from ``torch.autograd.grad``) and step ``optimizer``."""
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer.step()
