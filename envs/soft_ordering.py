"""SoftOrdering: soft one-hot encoding, soft histograms of sets, and their recurrent form.

Following the description of its author:

* **SOHE** (soft one-hot encoding) is an activation that splits each output of a linear layer into
  ``n_bins`` soft bins and flattens them: ``(..., C) -> (..., C * n_bins)``.
* **SoftOrdering** is SOHE followed by a mean over the elements of a set: a soft histogram, like
  PointNet with histogram pooling in place of max pooling. It is invariant to the order of the set.
* **RecurrentSoftOrdering** loops SOHE over glimpses one at a time, accumulating the result into a
  histogram state; a small linear layer inside maps (glimpse features, current state) to the stream
  being binned, so what a glimpse adds can depend on what was already seen.

The soft bins
-------------
For a scalar ``x`` and ``n`` bins with fixed, unit-spaced thresholds
``t_k = k - (n + 1) / 2`` (``k = 1..n``, centred on 0)::

    SOHE(x)_k = sigmoid(x - t_k) - sigmoid(x - t_{k+1}),   with sigmoid(x - t_{n+1}) := 0.

Bin ``k`` is the soft indicator of ``t_k < x < t_{k+1}`` (the top bin is open-ended); the bins sum
to ``sigmoid(x - t_1) <= 1``, the missing mass being the soft "below every threshold" event. With
``n_bins = 1`` the single bin is exactly ``sigmoid(x)``. The preceding linear layer learns the
scale and offset, so fixed thresholds lose no generality, and every bin has a non-zero gradient
everywhere (no dead units).
"""

from __future__ import annotations

import torch
from torch import nn


class SOHE(nn.Module):
    """Soft one-hot encoding activation: ``(..., C) -> (..., C * n_bins)``, values in ``(0, 1)``.

    Output element ``c * n_bins + k`` is bin ``k`` of input channel ``c`` (channel-major flattening).

    :param n_bins: number of soft bins per input channel (``1`` gives a plain sigmoid).
    """

    def __init__(self, n_bins: int) -> None:
        super().__init__()
        if not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
        self.n_bins = n_bins
        thresholds = torch.arange(1, n_bins + 1, dtype=torch.float32) - (n_bins + 1) / 2.0
        self.register_buffer("thresholds", thresholds, persistent=False)

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upper = torch.sigmoid(x.unsqueeze(-1) - self.thresholds.to(x.dtype))  # (..., C, n): P(x > t_k)
        above_next = torch.cat([upper[..., 1:], torch.zeros_like(upper[..., :1])], dim=-1)
        return (upper - above_next).flatten(-2)


class SoftOrdering(nn.Module):
    """Soft histogram of a set: ``mean_s SOHE(W x_s + b)``.

    :param in_features: features per set element.
    :param channels: outputs of the linear layer, each split into ``n_bins`` soft bins.
    :param n_bins: soft bins per channel.

    ``forward(x, mask=None)``: ``x`` of shape ``(B, S, in_features)`` -> ``(B, channels * n_bins)``.
    ``mask`` (``(B, S)``, bool) marks the elements that belong to each set; the mean runs over those.
    """

    def __init__(self, in_features: int, channels: int, n_bins: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, channels)
        self.sohe = SOHE(n_bins)
        self.out_features = channels * n_bins

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        encoded = self.sohe(self.linear(x))  # (B, S, channels * n_bins)
        if mask is None:
            return encoded.mean(dim=1)
        weights = mask.to(encoded.dtype).unsqueeze(-1)
        return (encoded * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class RecurrentSoftOrdering(nn.Module):
    """One glimpse at a time: ``h_t = h_{t-1} + SOHE(W [x_t, h_{t-1}] + b)``.

    ``h`` is a soft histogram of shape ``(B, channels * n_bins)`` starting at zero; after ``t``
    glimpses each entry lies in ``[0, t]`` and the entries of one channel sum to at most ``t``.
    With the weights on ``h`` at zero, ``h_T`` is ``T`` times :class:`SoftOrdering` of the glimpses
    (so it forgets their order); the recurrent weights let a glimpse's bin depend on what was seen.

    :param in_features: features per glimpse (3 in this project: ``i``, ``j``, value).
    :param channels: channels of the inner linear layer.
    :param n_bins: soft bins per channel.
    """

    def __init__(self, in_features: int, channels: int, n_bins: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.state_features = channels * n_bins
        self.linear = nn.Linear(in_features + self.state_features, channels)
        self.sohe = SOHE(n_bins)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Start as a plain (order-blind) SoftOrdering with sharp, varied bins.

        * Weights on the state start at zero: the default ``nn.Linear`` init sums ``C * n_bins``
          histogram counts (up to ``T`` each) into every pre-activation, which pushes all bins to a
          batch-independent value, from which training stalls at the ``ln 10`` loss.
        * Weights on the glimpse features start wide (std 6 on ``i, j`` in ``[-1, 1]``, std 10 on the
          value in ``[0, 1]``; biases ``U(-8, 8)``): each channel then starts as a sharp soft
          half-plane test in (location, ink) space rather than a nearly constant bin; a narrower init
          (std 2, ``U(-2, 2)``) learns more slowly on random glimpses.
        """
        self.linear.weight.zero_()
        nn.init.normal_(self.linear.weight[:, : self.in_features - 1], std=6.0)
        nn.init.normal_(self.linear.weight[:, self.in_features - 1], std=10.0)
        nn.init.uniform_(self.linear.bias, -8.0, 8.0)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The empty histogram, ``zeros(batch_size, channels * n_bins)``."""
        return torch.zeros(batch_size, self.state_features, device=device or self.linear.weight.device)

    def increment(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What one glimpse adds: ``SOHE(W [x, state] + b)``, shape ``(B, channels * n_bins)``."""
        return self.sohe(self.linear(torch.cat([x, state], dim=-1)))

    def increments(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What each of ``K`` alternative glimpses would add to the same state: ``state`` ``(B, channels *
        n_bins)``, ``x`` ``(B, K, in_features)`` -> ``(B, K, channels * n_bins)``.

        Equal to :meth:`increment` on each ``(state, x[:, k])``, with the linear layer split as
        ``W [x, h] = W_x x + W_h h``: the state's share is computed once per row rather than ``K`` times,
        in the forward pass and in the backward pass alike.
        """
        weight_x, weight_h = self.linear.weight.split([self.in_features, self.state_features], dim=1)
        shared = nn.functional.linear(state, weight_h, self.linear.bias).unsqueeze(1)  # (B, 1, channels)
        return self.sohe(nn.functional.linear(x, weight_x) + shared)

    def forward(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step: ``state`` ``(B, channels * n_bins)`` and ``x`` ``(B, in_features)`` -> new state."""
        return state + self.increment(state, x)
