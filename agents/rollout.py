"""Differentiable glimpse episodes over a batch of images, shared by every agent's training and
evaluation.

An episode of ``T`` glimpses, for a batch of ``B`` images, starting from the empty histogram and the
uniform prediction ``[0.1] * 10``::

    obs_t     = concat(histogram_t, prediction_t)                  (B, H + 10)
    action_t  = policy(obs_t, t)                                   (B, 2), in [-1, 1]
    coords_t  = (action_t + 1) / 2 * 27                            (B, 2), pixel units (i, j)
    value_t   = sampler(images, coords_t)                          (B,)   (look; a PixelReader reads itself)
    histogram_{t+1} = core.observe(histogram_t, coords_t, value_t);  logits_{t+1} = core(histogram_{t+1})
    prediction_{t+1} = softmax(logits_{t+1})

This is the same computation as :class:`envs.MnistGlimpseEnv` (which runs it under ``no_grad``), so a
policy trained here acts identically in the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from envs.perception import PerceptionCore
from envs.sampler import Sampler, action_to_pixel

#: How a :class:`PixelReader`'s relaxed choice among ``K`` candidates sends gradients back (:func:`look`).
PIXEL_ESTIMATORS = ("mixture", "taken")
#: Which losses a glimpse's choice learns from (:func:`run_episodes`).
CREDITS = ("episode", "greedy")


class GlimpsePolicy(Protocol):
    """Anything that maps observations to actions: ``(obs (B, H + 10), step t) -> action (B, 2)``."""

    def __call__(self, observation: torch.Tensor, step: int) -> torch.Tensor: ...


@runtime_checkable
class PixelReader(Protocol):
    """A policy that reads its own glimpses, possibly as a relaxed choice among ``K`` candidates:
    ``read(obs, step, images, sampler) -> (coords (B, K, 2), values (B, K), weights (B, K))``.

    Candidate 0 is the glimpse taken; with ``K > 1``, gradients flow as if the histogram had moved by
    the ``weights``-mixture of the candidates' increments (straight-through, :func:`look`).
    ``history = (coords (B, t, 2), values (B, t))`` holds the episode's glimpses before ``step``
    (``t = step``), for a reader that remembers what it read.
    :class:`~agents.pixel_attention.PixelAttention` is one.
    """

    def read(
        self,
        observation: torch.Tensor,
        step: int,
        images: torch.Tensor,
        sampler: Sampler,
        history: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def look(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    histogram: torch.Tensor,
    observation: torch.Tensor,
    step: int,
    images: torch.Tensor,
    sampler: Sampler,
    estimator: str = "mixture",
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One glimpse of ``policy``: ``(histogram' (B, H), coords (B, 2) pixel units, values (B,))``.

    ``coords = (clip(policy(obs, t), -1, 1) + 1) / 2 * 27`` (clipped as the env clips),
    ``values = sampler(images, coords)``, ``histogram' = core.observe(histogram, coords, values)``.

    A :class:`PixelReader` with ``K > 1`` candidates: forward, exactly candidate 0's glimpse,
    ``histogram' = observe(h, c_0, v_0) + m - stopgrad(m)`` with the mixture of the candidates'
    increments ``m = sum_k w_k d_k``; backward, ``estimator`` (:data:`PIXEL_ESTIMATORS`) says what
    learns from ``m``:

    * ``"mixture"``: ``d_k = observe(h, c_k, v_k) - h`` with gradients, so the weights, the core and
      the earlier glimpses (through ``h``) all learn from every candidate's increment;
    * ``"taken"``: ``d_k = stopgrad(observe(h, c_k, v_k) - h)``, the straight-through Gumbel-softmax of
      ``F.gumbel_softmax(hard=True)``: the weights get the same gradient, ``dL/dw_k = g . d_k``, but the
      core and the earlier glimpses learn only from the glimpse taken (the candidates run without a
      graph, so the backward pass is one glimpse's, not ``K``'s).

    ``history``: the episode's glimpses before ``step`` for a :class:`PixelReader` (``None``: none yet).
    """
    if estimator not in PIXEL_ESTIMATORS:
        raise ValueError(f"Unknown pixel estimator {estimator!r}; valid values are {list(PIXEL_ESTIMATORS)}.")
    if not isinstance(policy, PixelReader):
        coords = action_to_pixel(policy(observation, step).clamp(-1.0, 1.0))
        values = sampler(images, coords)
        return core.observe(histogram, coords, values), coords, values
    if history is None:  # the episode's first glimpse
        history = (images.new_zeros(images.shape[0], 0, 2), images.new_zeros(images.shape[0], 0))
    coords, values, weights = policy.read(observation, step, images, sampler, history)
    if coords.shape[1] == 1:
        return core.observe(histogram, coords[:, 0], values[:, 0]), coords[:, 0], values[:, 0]
    if estimator == "mixture":
        increments = core.increments(histogram, coords, values)  # d_k with their graph
        taken = histogram + increments[:, 0]
    else:  # "taken": only the glimpse taken keeps its graph
        taken = core.observe(histogram, coords[:, 0], values[:, 0])
        with torch.no_grad():
            rest = core.increments(histogram, coords[:, 1:], values[:, 1:])
        increments = torch.cat([(taken - histogram).detach().unsqueeze(1), rest], dim=1)
    mixed = (weights.unsqueeze(-1) * increments).sum(dim=1)
    return taken + (mixed - mixed.detach()), coords[:, 0], values[:, 0]  # straight-through


@dataclass
class Episode:
    """What a batch of episodes produced; every tensor keeps its autograd graph.

    :param logits: ``(T, B, 10)`` class logits after glimpse ``t + 1``.
    :param coords: ``(T, B, 2)`` glimpse locations in pixel units.
    :param values: ``(T, B)`` sampled values.
    :param observations: ``(T, B, H + 10)`` the observation each action was chosen from.
    """

    logits: torch.Tensor
    coords: torch.Tensor
    values: torch.Tensor
    observations: torch.Tensor


def run_episodes(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    sampler: Sampler,
    images: torch.Tensor,
    glimpses: int,
    estimator: str = "mixture",
    credit: str = "episode",
) -> Episode:
    """Roll ``policy`` for ``glimpses`` steps on ``images`` ``(B, 28, 28)`` (float in ``[0, 1]``).

    Gradients flow from the logits into the core, and through the sampler and the coordinates into
    the policy (except with the ``nearest`` sampler, whose gradient is zero); a :class:`PixelReader`'s
    through its candidates' weights, as ``estimator`` says (:func:`look`). ``credit`` (:data:`CREDITS`)
    says which logits reach glimpse ``t``'s choice:

    * ``"episode"``: ``logits_{t+1}`` and every later one (backpropagation through the episode: the
      histogram carries the choice forward, and so does the policy's next observation);
    * ``"greedy"``: ``logits_{t+1}`` only, as GDFS (Covert et al., 2023) trains its selector. The
      histogram carried to the next glimpse re-reads glimpse ``t`` with its location and value
      detached, and the next observation is detached (both stated decisions: the core still learns
      through the whole episode, the policy's choice from what it adds at once). Forward values are
      those of ``"episode"``; the re-read costs one more ``core.observe`` per glimpse.
    """
    if credit not in CREDITS:
        raise ValueError(f"Unknown credit {credit!r}; valid values are {list(CREDITS)}.")
    histogram = core.initial_histogram(images.shape[0], images.device)
    observation = core.observation(histogram)
    logits, coords, values, observations = [], [], [], []
    for step in range(glimpses):
        observations.append(observation)
        history = None  # what a PixelReader read before this step
        if coords and isinstance(policy, PixelReader):
            history = (torch.stack(coords, dim=1), torch.stack(values, dim=1))
        relaxed, coords_t, values_t = look(
            policy, core, histogram, observation, step, images, sampler, estimator, history
        )
        logits_t = core(relaxed)
        if credit == "greedy":
            histogram = core.observe(histogram, coords_t.detach(), values_t.detach())
            observation = core.observation(histogram, logits_t).detach()
        else:
            histogram = relaxed
            observation = core.observation(histogram, logits_t)
        logits.append(logits_t)
        coords.append(coords_t)
        values.append(values_t)
    return Episode(torch.stack(logits), torch.stack(coords), torch.stack(values), torch.stack(observations))
