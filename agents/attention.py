"""The attention network: where to look next, from what has been seen so far."""

from __future__ import annotations

import torch
from torch import nn

from agents.baselines import initial_sequence
from agents.checkpoint import SavedPolicy


class AttentionNetwork(SavedPolicy, nn.Module):
    """``action_t = tanh(MLP(concat(histogram_t, prediction_t)) + theta_t)``: ``(B, H + 10) -> (B, 2)``.

    The action is the next glimpse location in normalised coordinates (``envs.sampler``), in
    ``[-1, 1]``. ``theta_t`` (``(T, 2)``, only with ``step_bias=True``) is a learned per-glimpse
    offset: the network is then a learned fixed sequence (:class:`~agents.baselines.FixedSequence`)
    plus an adaptive correction, so it can do at least as well as the fixed sequence. Without it the
    network sees only the observation and, at initialisation, sends every glimpse to the centre.

    :param observation_size: ``H + 10``.
    :param hidden: width of the two hidden layers.
    :param max_glimpses: ``T``, needed with ``step_bias``.
    :param step_bias: learn the per-glimpse offsets ``theta_t``.
    :param step_bias_init: how ``theta_t`` starts: ``"uniform"``, ``U(-1, 1)`` (a random fixed sequence
        within the central ~3/4 of the image); ``"spread"``, ``atanh`` of
        :func:`~agents.baselines.spread_sequence` (the same evenly spread sequence over the digit's box
        for every seed). Only the start: a checkpoint restores ``theta`` whichever it was.
    """

    def __init__(
        self,
        observation_size: int,
        hidden: int = 128,
        max_glimpses: int = 0,
        step_bias: bool = False,
        step_bias_init: str = "uniform",
    ) -> None:
        super().__init__()
        if step_bias and max_glimpses < 1:
            raise ValueError("AttentionNetwork(step_bias=True) needs the number of glimpses T >= 1.")
        self.observation_size = observation_size
        self.hidden = hidden
        self.max_glimpses = max_glimpses
        self.step_bias = step_bias
        self.theta = None
        if step_bias:
            start = initial_sequence(max_glimpses, step_bias_init)
            self.theta = nn.Parameter(start if step_bias_init == "uniform" else torch.atanh(start))
        self.net = nn.Sequential(
            nn.Linear(observation_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2),
        )
        # Start near the centre of the image, where the ink is, with a small spread.
        nn.init.normal_(self.net[-1].weight, std=0.01)
        nn.init.zeros_(self.net[-1].bias)

    checkpoint_kind = "attention"

    def checkpoint_config(self) -> dict:
        return {
            "observation_size": self.observation_size,
            "hidden": self.hidden,
            "glimpses": self.max_glimpses,
            "step_bias": self.step_bias,
        }

    def forward(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        if observation.shape[-1] != self.observation_size:
            raise ValueError(
                f"AttentionNetwork expects observations of size {self.observation_size}, got {observation.shape[-1]}: "
                "was it built for another perception core?"
            )
        output = self.net(observation)
        if self.theta is not None:
            if step >= self.max_glimpses:
                raise IndexError(
                    f"AttentionNetwork has step offsets for {self.max_glimpses} glimpses; step {step} is past them."
                )
            output = output + self.theta[step]
        return torch.tanh(output)
