"""Differentiable glimpse episodes over a batch of images, shared by every agent's training and
evaluation: the environment's own step (:func:`envs.episode.step`), run with gradients on.

An episode of ``T`` glimpses, for a batch of ``B`` images, from :func:`envs.episode.initial_state`
(the empty histogram and the uniform prediction ``[0.1] * 10``)::

    obs_t     = state_t.observation() = concat(histogram_t, prediction_t)       (B, H + 10)
    action_t  = policy(obs_t, t)                                                 (B, 2), in [-1, 1]
              | policy.candidate_pixels(obs_t, t)                                      a PixelReader's relaxed choice
    state_{t+1}, logits_{t+1} = envs.episode.step(state_t, action_t, images, core, sampler)

This is the computation of :class:`envs.MnistGlimpseEnv` (which runs the same step under
``no_grad``), so a policy trained here acts identically in the environment. A policy that reads the
record of its reads (:attr:`PixelReader.reads_record`) gets the record observation
(:meth:`envs.episode.EpisodeState.record_observation`), as the environment's ``obs_type="record"``
gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from envs.episode import CREDITS, PIXEL_ESTIMATORS, Candidates, initial_state, step
from envs.perception import PerceptionCore
from envs.sampler import Sampler

__all__ = ["CREDITS", "PIXEL_ESTIMATORS", "Episode", "GlimpsePolicy", "PixelReader", "reads_record", "run_episodes"]


class GlimpsePolicy(Protocol):
    """Anything that maps observations to actions: ``(obs (B, H + 10), step t) -> action (B, 2)``."""

    def __call__(self, observation: torch.Tensor, step: int) -> torch.Tensor: ...


@runtime_checkable
class PixelReader(Protocol):
    """A policy that chooses pixels, possibly as a relaxed choice among ``K`` candidates:
    ``candidate_pixels(obs, step) -> envs.episode.Candidates`` (``pixels (B, K)``, ``weights (B, K)``).

    Candidate 0 is the glimpse taken; with ``K > 1``, gradients flow as if the histogram had moved by
    the ``weights``-mixture of the candidates' increments (straight-through, :func:`envs.episode.step`).
    ``reads_record``: the policy reads the record of the episode's reads, so ``obs`` is the record
    observation (a dict: ``summary``, ``mask``, ``pixels``, ``step``) rather than the summary alone.
    :class:`~agents.pixel_attention.PixelAttention` is one.
    """

    reads_record: bool

    def candidate_pixels(self, observation: torch.Tensor | dict[str, torch.Tensor], step: int) -> Candidates: ...


def reads_record(policy: object) -> bool:
    """Whether ``policy`` acts on the record observation (a :class:`PixelReader` with ``reads_record``)."""
    return isinstance(policy, PixelReader) and bool(policy.reads_record)


@dataclass
class Episode:
    """What a batch of episodes produced; every tensor keeps its autograd graph.

    :param logits: ``(T, B, 10)`` class logits after glimpse ``t + 1``.
    :param coords: ``(T, B, 2)`` glimpse locations in pixel units.
    :param values: ``(T, B)`` sampled values.
    :param observations: ``(T, B, H + 10)`` the observation each action was chosen from (the record
        observation's ``summary`` for a policy that reads the record).
    :param records: for a policy that reads the record (:func:`reads_record`), the record each action
        was chosen from: ``(mask (T, B, 784), pixels (T, B, 784))``, detached; ``None`` otherwise.
    """

    logits: torch.Tensor
    coords: torch.Tensor
    values: torch.Tensor
    observations: torch.Tensor
    records: tuple[torch.Tensor, torch.Tensor] | None = None


def run_episodes(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    sampler: Sampler,
    images: torch.Tensor,
    max_glimpses: int,
    estimator: str = "mixture",
    credit: str = "episode",
) -> Episode:
    """Roll ``policy`` for ``max_glimpses`` steps on ``images`` ``(B, 28, 28)`` (float in ``[0, 1]``).

    Gradients flow from the logits into the core, and through the sampler and the coordinates into
    the policy (except with the ``nearest`` sampler, whose gradient is zero); a :class:`PixelReader`'s
    through its candidates' weights, as ``estimator`` says (:data:`PIXEL_ESTIMATORS`,
    :func:`envs.episode.step`). ``credit`` (:data:`CREDITS`) says which logits reach glimpse ``t``'s
    choice:

    * ``"episode"``: ``logits_{t+1}`` and every later one (backpropagation through the episode: the
      histogram carries the choice forward, and so does the policy's next observation);
    * ``"greedy"``: ``logits_{t+1}`` only, as GDFS (Covert et al., 2023) trains its selector. The
      histogram carried to the next glimpse re-reads glimpse ``t`` with its location and value
      detached (:func:`envs.episode.step`), and the policy's observation is detached (both stated
      decisions: the core still learns through the whole episode, the policy's choice from what it
      adds at once). Forward values are those of ``"episode"``; the re-read costs one more
      ``core.observe`` per glimpse.
    """
    if credit not in CREDITS:
        raise ValueError(f"Unknown credit {credit!r}; valid values are {list(CREDITS)}.")
    if estimator not in PIXEL_ESTIMATORS:
        raise ValueError(f"Unknown pixel estimator {estimator!r}; valid values are {list(PIXEL_ESTIMATORS)}.")
    keep_reads = reads_record(policy)
    state = initial_state(core, images.shape[0], max_glimpses, images.device, keep_reads=keep_reads)
    logits, coords, values, observations, masks, pixels = [], [], [], [], [], []
    for t in range(max_glimpses):
        observation = state.observation()
        if credit == "greedy":
            observation = observation.detach()  # a stated decision: see the docstring
        observations.append(observation)
        if isinstance(policy, PixelReader):
            seen = state.record_observation(observation) if keep_reads else observation
            if keep_reads:
                masks.append(seen["mask"])
                pixels.append(seen["pixels"])
            action = policy.candidate_pixels(seen, t)
        else:
            action = policy(observation, t)
        out = step(state, action, images, core, sampler, estimator=estimator, credit=credit)
        state = out.state
        logits.append(out.logits)
        coords.append(out.coords)
        values.append(out.values)
    records = (torch.stack(masks), torch.stack(pixels)) if keep_reads else None
    return Episode(torch.stack(logits), torch.stack(coords), torch.stack(values), torch.stack(observations), records)
