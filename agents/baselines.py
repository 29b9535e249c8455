"""Non-adaptive glimpse policies: the baselines every adaptive agent must beat.

Both follow :class:`agents.rollout.GlimpsePolicy`: ``policy(observation (B, H + 10), step) -> action
(B, 2)`` in ``[-1, 1]``, ignoring the observation.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.checkpoint import SavedPolicy


class RandomGlimpses(SavedPolicy, nn.Module):
    """Glimpses drawn uniformly over the image, independently of what was seen.

    :param generator: the ``torch.Generator`` to draw from (on the observations' device); ``None``
        uses torch's global generator.
    """

    checkpoint_kind = "random"

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def checkpoint_config(self) -> dict:
        return {}  # the generator is not saved: a loaded policy draws from torch's global generator

    def forward(self, observation: torch.Tensor, step: int) -> torch.Tensor:
        shape = (observation.shape[0], 2)
        return torch.rand(shape, generator=self.generator, device=observation.device) * 2.0 - 1.0


class FixedSequence(SavedPolicy, nn.Module):
    """A learned, non-adaptive sequence of ``max_glimpses`` locations: ``action_t = tanh(theta_t)``.

    The same ``T`` locations are used for every image; gradients reach ``theta`` through a
    differentiable sampler.

    :param max_glimpses: length ``T`` of the sequence.
    :param generator: initialises ``theta`` uniformly in ``[-1, 1]`` (so locations start spread over
        the central ~3/4 of the image).
    """

    def __init__(self, max_glimpses: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.rand(max_glimpses, 2, generator=generator) * 2.0 - 1.0)

    checkpoint_kind = "fixed"

    def checkpoint_config(self) -> dict:
        return {"glimpses": self.theta.shape[0]}

    def locations(self) -> torch.Tensor:
        """The sequence as actions, ``tanh(theta)`` of shape ``(T, 2)`` in ``[-1, 1]`` (detached)."""
        return torch.tanh(self.theta.detach())

    def forward(self, observation: torch.Tensor, step: int) -> torch.Tensor:
        if step >= self.theta.shape[0]:
            raise IndexError(f"FixedSequence has {self.theta.shape[0]} locations; step {step} is past its end.")
        return torch.tanh(self.theta[step]).expand(observation.shape[0], 2)
