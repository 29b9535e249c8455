"""The attention network: where to look next, from what has been seen so far."""

from __future__ import annotations

import torch
from torch import nn


class AttentionNetwork(nn.Module):
    """``action = tanh(MLP(concat(histogram, prediction)))``: ``(B, H + 10) -> (B, 2)`` in ``[-1, 1]``.

    The action is the next glimpse location in normalised coordinates (``envs.sampler``).

    :param observation_size: ``H + 10``.
    :param hidden: width of the two hidden layers.
    """

    def __init__(self, observation_size: int, hidden: int = 128) -> None:
        super().__init__()
        self.observation_size = observation_size
        self.hidden = hidden
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

    def forward(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        if observation.shape[-1] != self.observation_size:
            raise ValueError(
                f"AttentionNetwork expects observations of size {self.observation_size}, got {observation.shape[-1]}: "
                "was it built for another perception core?"
            )
        return torch.tanh(self.net(observation))
