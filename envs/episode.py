"""The glimpse episode, written once: a pure, batched step on an explicit state.

Every environment and every agent runs this one function. :class:`~envs.simulator.GlimpseSimulator`
(and through it both environments and the SB3 adapter) calls :func:`step` under ``no_grad``; the
differentiable agents (``agents.rollout.run_episodes``) call the same :func:`step` with gradients on.
:func:`step` neither reads nor writes anything but its arguments: it returns a new
:class:`EpisodeState` and never changes the one it was given, so it batches (``B`` episodes, no
Python loop over them) and differentiates like any torch function.

One glimpse of ``B`` episodes, from ``state_t`` (histogram ``h_t`` ``(B, H)``, logits ``z_t``
``(B, 10)``, the record of reads)::

    coords_t  = (clip(a_t, -1, 1) + 1) / 2 * 27                   (B, 2)  pixel units, a_t in [-1, 1]^2
              | (p_t // 28, p_t % 28)                              a pixel index p_t in [0, 784)
    value_t   = sampler(image, coords_t)                           (B,)
    h_{t+1}   = h_t + SOHE(W [enc(coords_t, value_t), h_t] + b)    core.observe
    z_{t+1}   = head(h_{t+1})                                      core(h_{t+1})
    r_t       = log softmax(z_{t+1})[y] - log softmax(z_t)[y]      "dense" (z_0 = 0: the uniform prediction)
              | 1[t + 1 = T and argmax z_{t+1} = y]                "final"

The observation an agent acts on is ``concat(h_t, softmax(z_t))`` (:meth:`EpisodeState.observation`),
or with the record of reads (:meth:`EpisodeState.record_observation`) the mask and grey levels of the
pixels read so far as well.

A relaxed choice among ``K`` candidate pixels (:class:`Candidates`, the pixel policy's training
choice) is read in the same step: forward, exactly candidate 0's glimpse; backward, the gradient of
the ``weights``-mixture of the candidates' increments (straight-through, :func:`step`'s
``estimator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .data import IMAGE_SIZE, NUM_CLASSES
from .perception import PerceptionCore
from .sampler import Sampler, action_to_pixel

REWARD_MODES = ("dense", "final")
#: How a :class:`Candidates` choice sends gradients back (:func:`step`).
PIXEL_ESTIMATORS = ("mixture", "taken")
#: What the state carried to the next glimpse keeps of this glimpse's graph (:func:`step`).
CREDITS = ("episode", "greedy")

NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE


@dataclass(frozen=True)
class EpisodeState:
    """``B`` episodes of at most ``T`` glimpses, between two glimpses.

    :param histogram: ``(B, H)`` the core's SoftOrdering state ``h_t``.
    :param logits: ``(B, 10)`` the core's logits after the last glimpse, ``z_t`` (zeros before the
        first: ``softmax(0)`` is the uniform prediction).
    :param elapsed: ``(B,)`` int64, glimpses taken, ``t``.
    :param trail: ``(B, T, 2)`` the glimpse locations taken (pixel units), zeros past ``t``; detached.
    :param trail_values: ``(B, T)`` the values read there, zeros past ``t``; detached.
    :param read: ``(B, 784)`` bool, the pixel cells read (``i * 28 + j`` of the nearest centre), or
        ``None`` when the state keeps no record of reads.
    :param read_values: ``(B, 784)`` the grey level last read in each cell, 0 elsewhere (or ``None``);
        detached.

    ``trail``, ``trail_values``, ``read`` and ``read_values`` are the record of the episode: what was
    read, not a path for gradients (a stated decision: :func:`step` detaches what it writes there; the
    glimpse's own ``coords`` and ``values`` keep their graph in :class:`Transition`).
    """

    histogram: torch.Tensor
    logits: torch.Tensor
    elapsed: torch.Tensor
    trail: torch.Tensor
    trail_values: torch.Tensor
    read: torch.Tensor | None = None
    read_values: torch.Tensor | None = None

    @property
    def max_glimpses(self) -> int:
        """``T``, the episode length."""
        return self.trail.shape[1]

    @cached_property
    def prediction(self) -> torch.Tensor:
        """``softmax(z_t)``, ``(B, 10)`` (computed once per state: the state never changes)."""
        return torch.softmax(self.logits, dim=-1)

    def observation(self) -> torch.Tensor:
        """``concat(h_t, softmax(z_t))``, ``(B, H + 10)``."""
        return torch.cat([self.histogram, self.prediction], dim=-1)

    def record_observation(self, summary: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The observation with the record of reads: ``summary`` ``(B, H + 10)`` (:meth:`observation`,
        or the ``summary`` given, e.g. a detached one),
        ``mask`` ``(B, 784)`` (1 where cell ``i * 28 + j`` was read), ``pixels`` ``(B, 784)`` (the grey
        level read there, 0 elsewhere) and ``step`` ``(B, 1)`` (``t``, float). Built from the glimpses
        taken only, never from unread pixels or the label.

        :raises ValueError: if the state keeps no reads (:func:`initial_state` with ``keep_reads=False``).
        """
        if self.read is None:
            raise ValueError("This episode state keeps no reads: build it with initial_state(keep_reads=True).")
        return {
            "summary": self.observation() if summary is None else summary,
            "mask": self.read.float(),
            "pixels": self.read_values.clone(),
            "step": self.elapsed[:, None].float(),
        }


def initial_state(
    core: PerceptionCore,
    batch_size: int,
    max_glimpses: int,
    device: torch.device | str | None = None,
    keep_reads: bool = False,
) -> EpisodeState:
    """``batch_size`` episodes before their first glimpse: the empty histogram, logits 0 (the
    uniform prediction), nothing read.

    :param core: gives the histogram's size ``H``.
    :param max_glimpses: ``T``.
    :param keep_reads: keep the reads (``read``, ``read_values``: ``2 * 784`` entries per episode).
    """
    histogram = core.initial_histogram(batch_size, device)
    device = histogram.device
    zeros = torch.zeros
    return EpisodeState(
        histogram=histogram,
        logits=zeros(batch_size, NUM_CLASSES, device=device),
        elapsed=zeros(batch_size, dtype=torch.long, device=device),
        trail=zeros(batch_size, max_glimpses, 2, device=device),
        trail_values=zeros(batch_size, max_glimpses, device=device),
        read=zeros(batch_size, NUM_PIXELS, dtype=torch.bool, device=device) if keep_reads else None,
        read_values=zeros(batch_size, NUM_PIXELS, device=device) if keep_reads else None,
    )


def reset(state: EpisodeState, rows: torch.Tensor) -> EpisodeState:
    """``state`` with the episodes in ``rows`` (bool ``(B,)``) back at their start (:func:`initial_state`)."""

    def fresh(tensor: torch.Tensor | None) -> torch.Tensor | None:
        if tensor is None:
            return None
        mask = rows.view(-1, *([1] * (tensor.dim() - 1)))
        return torch.where(mask, torch.zeros((), dtype=tensor.dtype, device=tensor.device), tensor)

    return EpisodeState(*(fresh(getattr(state, name)) for name in EpisodeState.__dataclass_fields__))


@dataclass(frozen=True)
class Candidates:
    """A relaxed choice among ``K`` pixels: ``pixels`` ``(B, K)`` int64 indices ``i * 28 + j``, candidate
    0 the one taken, and ``weights`` ``(B, K)`` (summing to 1 per row) whose mixture of the candidates'
    increments carries the gradient (:func:`step`)."""

    pixels: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class Transition:
    """What :func:`step` returns.

    :param state: the episodes after the glimpse.
    :param logits: ``(B, 10)`` ``z_{t+1}``, with its graph (equal to ``state.logits`` where active).
    :param coords: ``(B, 2)`` the glimpse taken, pixel units (candidate 0 of a :class:`Candidates`).
    :param values: ``(B,)`` the value read there, with its graph.
    :param reward: ``(B,)`` float, 0 where not active (``None`` without labels).
    :param terminated: ``(B,)`` bool, true where this glimpse was the ``T``-th.
    :param correct: ``(B,)`` bool, ``argmax z_{t+1} = y`` (``None`` without labels).
    """

    state: EpisodeState
    logits: torch.Tensor
    coords: torch.Tensor
    values: torch.Tensor
    reward: torch.Tensor | None
    terminated: torch.Tensor
    correct: torch.Tensor | None


def cell_index(coords: torch.Tensor) -> torch.Tensor:
    """The pixel cell ``i * 28 + j`` each glimpse location falls in (its nearest centre, halves to
    even): ``coords`` ``(..., 2)`` pixel units -> ``(...)`` int64. The cell the record of reads marks."""
    cell = coords.round().long().clamp(0, IMAGE_SIZE - 1)
    return cell[..., 0] * IMAGE_SIZE + cell[..., 1]


def pixel_coords(pixels: torch.Tensor) -> torch.Tensor:
    """The centres ``(i, j)`` = ``(p // 28, p % 28)`` of pixel indices ``p`` ``(...)`` -> ``(..., 2)`` float."""
    return torch.stack([pixels // IMAGE_SIZE, pixels % IMAGE_SIZE], dim=-1).float()


def read_candidates(sampler: Sampler, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``sampler`` at ``coords`` ``(B, K, 2)`` of each image ``(B, 28, 28)`` -> ``(B, K)``
    (:meth:`~envs.sampler.Sampler.points`)."""
    return sampler.points(images, coords)


def read_pixels(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """The grey levels of pixels ``pixels`` ``(B, K)`` (indices ``i * 28 + j``) of each image ``(B, 784)``
    -> ``(B, K)``: what a glimpse at each pixel's centre reads, with any sampler."""
    return images.gather(1, pixels)


def step(
    state: EpisodeState,
    action: torch.Tensor | Candidates,
    images: torch.Tensor,
    core: PerceptionCore,
    sampler: Sampler,
    labels: torch.Tensor | None = None,
    reward: str = "dense",
    active: torch.Tensor | None = None,
    estimator: str = "mixture",
    credit: str = "episode",
) -> Transition:
    """One glimpse of every episode: ``(state_t, action_t) -> state_{t+1}`` and the reward.

    Runs with or without gradients alike. Actions are not checked here (the environments check what
    their users pass, :func:`envs.simulator.as_actions`), and stepping an episode past ``T`` is the
    caller's to prevent (its trail's last entry would be overwritten).

    :param state: the episodes, ``B`` of them.
    :param action: ``(B, 2)`` float in ``[-1, 1]`` (clipped), ``(B,)`` integer pixel indices (read at
        the pixel's centre), or :class:`Candidates`.
    :param images: ``(B, 28, 28)`` float grey levels in ``[0, 1]``.
    :param core: the perception core.
    :param sampler: the read-out.
    :param labels: ``(B,)`` the true classes, for the reward (``None``: no reward computed).
    :param reward: ``"dense"`` or ``"final"`` (:data:`REWARD_MODES`, the module's equations).
    :param active: optional bool ``(B,)``: only these episodes advance; the others keep their state
        and get reward 0 and ``terminated=False``.
    :param estimator: with :class:`Candidates` of ``K > 1``, what learns from the mixture
        ``m = sum_k w_k d_k`` of the increments the straight-through ``h' = observe(h, c_0, v_0) + m -
        stopgrad(m)`` adds (:data:`PIXEL_ESTIMATORS`):

        * ``"mixture"``: ``d_k = observe(h, c_k, v_k) - h`` with gradients, so the weights, the core and
          the earlier glimpses (through ``h``) all learn from every candidate's increment;
        * ``"taken"``: ``d_k = stopgrad(observe(h, c_k, v_k) - h)``, the straight-through Gumbel-softmax of
          ``F.gumbel_softmax(hard=True)``: the weights get the same gradient, ``dL/dw_k = g . d_k``, but
          the core and the earlier glimpses learn only from the glimpse taken (the candidates run
          without a graph, so the backward pass is one glimpse's, not ``K``'s).
    :param credit: what the state carried to the next glimpse keeps of this one's graph
        (:data:`CREDITS`). ``"episode"``: all of it (``h_{t+1}`` is the relaxed histogram whose logits
        are returned). ``"greedy"``: ``h_{t+1} = observe(h_t, stopgrad(c_t), stopgrad(v_t))``, a re-read
        with the glimpse's location and value detached (a stated decision: the core still learns
        through the whole episode, the choice only from ``z_{t+1}``, as GDFS trains its selector);
        the returned logits keep the choice's graph. Forward values are those of ``"episode"``.
    """
    if estimator not in PIXEL_ESTIMATORS:
        raise ValueError(f"Unknown pixel estimator {estimator!r}; valid values are {list(PIXEL_ESTIMATORS)}.")
    if credit not in CREDITS:
        raise ValueError(f"Unknown credit {credit!r}; valid values are {list(CREDITS)}.")
    if reward not in REWARD_MODES:
        raise ValueError(f"Unknown reward {reward!r}; valid values are {list(REWARD_MODES)}.")
    histogram = state.histogram
    if isinstance(action, Candidates):
        candidates = pixel_coords(action.pixels)  # (B, K, 2)
        candidate_values = read_candidates(sampler, images, candidates)  # (B, K)
        coords, values = candidates[:, 0], candidate_values[:, 0]
        if candidates.shape[1] == 1:
            relaxed = core.observe(histogram, coords, values)
        else:
            relaxed = _mixture(core, histogram, candidates, candidate_values, action.weights, estimator)
    else:
        if action.dtype.is_floating_point:
            coords = action_to_pixel(action.clamp(-1.0, 1.0))
        else:
            coords = pixel_coords(action)
        values = sampler(images, coords)
        relaxed = core.observe(histogram, coords, values)
    logits = core(relaxed)
    carried = core.observe(histogram, coords.detach(), values.detach()) if credit == "greedy" else relaxed

    batch = histogram.shape[0]
    rows = torch.arange(batch, device=histogram.device)
    index = state.elapsed.clamp(max=state.max_glimpses - 1)
    # The record holds what was read, detached (see EpisodeState).
    seen_coords, seen_values = coords.detach(), values.detach()
    # Out-of-place writes (index_put): the state given is never changed.
    if active is None:
        new_histogram, new_logits = carried, logits
        trail = state.trail.index_put((rows, index), seen_coords)
        trail_values = state.trail_values.index_put((rows, index), seen_values)
        elapsed = state.elapsed + 1
    else:
        column = active.unsqueeze(-1)
        new_histogram = torch.where(column, carried, histogram)
        new_logits = torch.where(column, logits, state.logits)
        trail = state.trail.index_put((rows, index), torch.where(column, seen_coords, state.trail[rows, index]))
        trail_values = state.trail_values.index_put(
            (rows, index), torch.where(active, seen_values, state.trail_values[rows, index])
        )
        elapsed = state.elapsed + active.long()
    read, read_values = state.read, state.read_values
    if read is not None:  # the cell the glimpse falls in (nearest centre, halves to even) and the value read
        flat = cell_index(seen_coords)
        if active is None:
            read_values = read_values.index_put((rows, flat), seen_values)
            read = read.index_put((rows, flat), torch.ones_like(flat, dtype=torch.bool))
        else:
            read_values = read_values.index_put((rows, flat), torch.where(active, seen_values, read_values[rows, flat]))
            read = read.index_put((rows, flat), read[rows, flat] | active)
    new_state = EpisodeState(new_histogram, new_logits, elapsed, trail, trail_values, read, read_values)

    terminated = elapsed >= state.max_glimpses
    if active is not None:
        terminated = active & terminated
    gain = correct = None
    if labels is not None:
        correct = logits.argmax(dim=-1) == labels
        if reward == "dense":
            log_prob = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
            before = torch.log_softmax(state.logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
            gain = log_prob - before if active is None else torch.where(active, log_prob - before, 0.0)
        else:
            gain = (terminated & correct).float()
    return Transition(new_state, logits, coords, values, gain, terminated, correct)


def _mixture(
    core: PerceptionCore,
    histogram: torch.Tensor,
    coords: torch.Tensor,
    values: torch.Tensor,
    weights: torch.Tensor,
    estimator: str,
) -> torch.Tensor:
    """``observe(h, c_0, v_0) + m - stopgrad(m)``, ``m = sum_k w_k d_k``: forward, candidate 0's
    histogram; backward, the mixture's (:func:`step`'s ``estimator`` says which ``d_k`` keep a graph)."""
    if estimator == "mixture":
        increments = core.increments(histogram, coords, values)  # d_k with their graph
        taken = histogram + increments[:, 0]
    else:  # "taken": only the glimpse taken keeps its graph
        taken = core.observe(histogram, coords[:, 0], values[:, 0])
        with torch.no_grad():  # a stated decision: the other candidates' increments are constants
            rest = core.increments(histogram, coords[:, 1:], values[:, 1:])
        # the taken increment's graph already reaches the core through `taken`; here it is a constant
        increments = torch.cat([(taken - histogram).detach().unsqueeze(1), rest], dim=1)
    mixed = (weights.unsqueeze(-1) * increments).sum(dim=1)
    return taken + (mixed - mixed.detach())  # straight-through
