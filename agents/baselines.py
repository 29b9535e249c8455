"""Non-adaptive glimpse policies: the baselines every adaptive agent must beat.

Both follow :class:`agents.rollout.GlimpsePolicy`: ``policy(observation (B, H + 10), step) -> action
(B, 2)`` in ``[-1, 1]``, ignoring the observation.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.checkpoint import SavedPolicy

#: Half-width, in normalised coordinates, of the box the spread sequence covers: MNIST's digits are
#: normalised into the central 20x20 pixels of the 28x28 image (pixel centres 4..23 are -0.7..0.7).
DIGIT_BOX = 0.7

#: How a policy's per-glimpse offsets start: ``"spread"`` (:func:`spread_sequence`) or ``"uniform"``
#: (drawn ``U(-1, 1)`` from torch's global generator: a random fixed sequence, different per seed).
SEQUENCE_INITS = ("spread", "uniform")


def halton(count: int, base: int) -> torch.Tensor:
    """The first ``count`` points (from index 1) of the van der Corput sequence in ``base``: ``(count,)`` in ``(0, 1)``."""
    points = []
    for index in range(1, count + 1):
        fraction, value = 1.0, 0.0
        while index > 0:
            fraction /= base
            value += fraction * (index % base)
            index //= base
        points.append(value)
    return torch.tensor(points)


def spread_sequence(count: int, half_width: float = DIGIT_BOX) -> torch.Tensor:
    """``count`` glimpse locations ``(count, 2)`` that cover the digit's box evenly at every prefix:
    the 2-D Halton sequence (bases 2 and 3) mapped onto ``[-half_width, half_width]^2``.

    Each new point falls into a gap the earlier ones leave, so the first ``t`` glimpses neither cluster
    nor leave large parts of the box unread, as ``t`` uniform draws can (``tests/test_start_sequence.py``
    compares both). No randomness: every seed starts from the same sequence.
    """
    if count < 1 or not 0.0 < half_width < 1.0:
        raise ValueError(f"spread_sequence needs count >= 1 and 0 < half_width < 1, got {count} and {half_width}.")
    unit = torch.stack([halton(count, 2), halton(count, 3)], dim=-1)
    return (2.0 * unit - 1.0) * half_width


def initial_sequence(count: int, init: str) -> torch.Tensor:
    """Per-glimpse locations ``(count, 2)`` in ``(-1, 1)`` to start a policy's offsets from (:data:`SEQUENCE_INITS`)."""
    if init == "spread":
        return spread_sequence(count)
    if init == "uniform":
        return torch.rand(count, 2) * 2.0 - 1.0
    raise ValueError(f"Unknown sequence init {init!r}; valid values are {list(SEQUENCE_INITS)}.")


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
