"""Differentiable glimpse episodes over a batch of images, shared by every agent's training and
evaluation.

An episode of ``T`` glimpses, for a batch of ``B`` images, starting from the empty histogram and the
uniform prediction ``[0.1] * 10``::

    obs_t     = concat(histogram_t, prediction_t)                  (B, H + 10)
    action_t  = policy(obs_t, t)                                   (B, 2), in [-1, 1]
    coords_t  = (action_t + 1) / 2 * 27                            (B, 2), pixel units (i, j)
    histogram_{t+1}, logits_{t+1}, value_t = core.glimpse(histogram_t, images, coords_t, sampler)
    prediction_{t+1} = softmax(logits_{t+1})

This is the same computation as :class:`envs.MnistGlimpseEnv` (which runs it under ``no_grad``), so a
policy trained here acts identically in the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from envs.perception import PerceptionCore
from envs.sampler import Sampler, action_to_pixel


class GlimpsePolicy(Protocol):
    """Anything that maps observations to actions: ``(obs (B, H + 10), step t) -> action (B, 2)``."""

    def __call__(self, observation: torch.Tensor, step: int) -> torch.Tensor: ...


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
    policy: GlimpsePolicy, core: PerceptionCore, sampler: Sampler, images: torch.Tensor, glimpses: int
) -> Episode:
    """Roll ``policy`` for ``glimpses`` steps on ``images`` ``(B, 28, 28)`` (float in ``[0, 1]``).

    Gradients flow from the logits into the core, and through the sampler and the coordinates into
    the policy (except with the ``nearest`` sampler, whose gradient is zero).
    """
    histogram = core.initial_histogram(images.shape[0], images.device)
    observation = core.observation(histogram)
    logits, coords, values, observations = [], [], [], []
    for step in range(glimpses):
        observations.append(observation)
        coords_t = action_to_pixel(policy(observation, step).clamp(-1.0, 1.0))  # as the env clips
        histogram, logits_t, values_t = core.glimpse(histogram, images, coords_t, sampler)
        observation = core.observation(histogram, logits_t)
        logits.append(logits_t)
        coords.append(coords_t)
        values.append(values_t)
    return Episode(torch.stack(logits), torch.stack(coords), torch.stack(values), torch.stack(observations))
