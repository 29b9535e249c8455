"""Pretraining the perception core before an agent uses it (the warm start of every agent's core).

* :func:`pretrain_core`, on random glimpses: one step draws a batch of training images, glimpses each
  ``T`` times at uniformly random locations (:class:`~agents.baselines.RandomGlimpses`), and takes an
  Adam step on the perception loss over all glimpses. ``train/pretrain_perception.py`` runs it alone;
  ``train/differentiable.py --core pretrain`` runs it before training its agent.
* :func:`pretrain_core_on_pixels`, in set form on exact pixels: while the core's weights on its
  state are zero it is a plain SoftOrdering (order-free), so one step scores every prefix of a random
  subset of pixels at once (:func:`prefix_logits`; ``train/differentiable.py --core pretrain
  --pretrain-on pixels``). :func:`mask_logits` scores any set of pixels of an image, given as a mask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from agents.baselines import RandomGlimpses
from agents.rollout import run_episodes
from envs.data import IMAGE_SIZE, MnistSplit
from envs.perception import PerceptionCore, perception_loss
from envs.sampler import Sampler, pixel_centres


def pretrain_core(
    core: PerceptionCore,
    data: MnistSplit,
    steps: int,
    batch_size: int = 256,
    glimpses: int = 25,
    learning_rate: float = 3e-3,
    sampler: Sampler | None = None,
    report: Callable[[int, float], None] | None = None,
    max_seconds: float = math.inf,
) -> PerceptionCore:
    """Train ``core`` in place for ``steps`` Adam steps on random glimpses of ``data``; returns it.

    Batches are drawn with torch's global generator (seed it first for a reproducible core).

    :param report: called as ``report(step, loss)`` after every step (e.g. a progress bar).
    :param max_seconds: stop earlier, after the step that passes this many seconds of wall clock.
    """
    if steps < 0 or batch_size < 1 or glimpses < 1:
        raise ValueError(
            f"pretrain_core needs steps >= 0, batch_size >= 1 and glimpses >= 1; got {steps}, {batch_size}, {glimpses}."
        )
    device = data.images.device
    policy, sampler = RandomGlimpses(), sampler or Sampler("bilinear")

    def batch_loss() -> torch.Tensor:
        batch = torch.randint(len(data), (batch_size,), device=device)
        images = data.images[batch].float() / 255.0
        episode = run_episodes(policy, core, sampler, images, glimpses)
        return perception_loss(episode.logits, data.labels[batch])

    return _adam_steps(core, batch_loss, steps, learning_rate, report, max_seconds)


def _adam_steps(
    core: PerceptionCore,
    batch_loss: Callable[[], torch.Tensor],
    steps: int,
    learning_rate: float,
    report: Callable[[int, float], None] | None,
    max_seconds: float,
) -> PerceptionCore:
    """``steps`` Adam steps on ``core`` (train mode), each on a fresh ``batch_loss()``, stopping after
    the step that passes ``max_seconds`` of wall clock; ``report(step, loss)`` after every step."""
    optimizer = torch.optim.Adam(core.parameters(), lr=learning_rate)
    core.train()
    start = time.time()
    for step in range(steps):
        if time.time() - start > max_seconds:
            break
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if report is not None:
            report(step, loss.item())
    return core


def pretrain_core_on_pixels(
    core: PerceptionCore,
    data: MnistSplit,
    steps: int,
    batch_size: int = 256,
    pixels: int = 50,
    learning_rate: float = 3e-3,
    report: Callable[[int, float], None] | None = None,
    max_seconds: float = math.inf,
) -> PerceptionCore:
    """Train ``core`` in place on exact pixels in set form, for ``steps`` Adam steps; returns it.

    One step: for each of ``batch_size`` training images, ``pixels`` distinct pixels drawn uniformly
    in random order, ``p_1 .. p_L``. With its state weights at zero, the core's histogram after the
    first ``t`` of them is ``h_t = sum_{s <= t} SOHE(W_x enc(p_s) + b)`` (its increments do not depend
    on the state), so all ``L`` prefixes are one batched increment and a cumulative sum, and the loss
    is the cross-entropy of ``head(h_t)`` averaged over ``t = 1..L`` and the batch: a subset of every
    size from 1 to ``L``, as GDFS pretrains its predictor on random masks. Each pixel is read exactly,
    as the ``nearest`` read-out and a pixel choice read it.

    The state weights get no gradient and stay zero: what a glimpse adds may depend on the state
    only once the agent's training moves them. Batches and subsets are drawn with torch's global
    generator.

    :raises ValueError: if the core's state weights are not all zero (a core already trained with
        them is not order-free; pretrain a fresh one).
    """
    if steps < 0 or batch_size < 1 or not 1 <= pixels <= IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(
            f"pretrain_core_on_pixels needs steps >= 0, batch_size >= 1 and 1 <= pixels <= 784; got {steps}, "
            f"{batch_size}, {pixels}."
        )
    _check_order_free(core, "pretrain_core_on_pixels")
    device = data.images.device
    centres = pixel_centres(device)

    def batch_loss() -> torch.Tensor:
        batch = torch.randint(len(data), (batch_size,), device=device)
        chosen = torch.rand(batch_size, IMAGE_SIZE * IMAGE_SIZE, device=device).argsort(dim=1)[:, :pixels]
        values = (data.images[batch].flatten(1).float() / 255.0).gather(1, chosen)  # (B, L)
        return perception_loss(prefix_logits(core, centres[chosen], values), data.labels[batch])

    return _adam_steps(core, batch_loss, steps, learning_rate, report, max_seconds)


def _check_order_free(core: PerceptionCore, caller: str) -> None:
    """Refuse a core whose state weights are not all zero: set form needs the order-free core."""
    if bool(core.rso.linear.weight[:, core.encoding.features :].any()):
        raise ValueError(
            f"{caller} reads a set of pixels in set form, which needs the core's state weights at zero (a fresh "
            "PerceptionCore, or one trained only in set form); this core has non-zero ones. Use a fresh core, or "
            "PerceptionCore.replay for a core trained with them."
        )


def mask_logits(core: PerceptionCore, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The logits after reading the pixels ``mask`` marks, in set form: ``images`` ``(B, 784)`` grey
    levels in ``[0, 1]``, ``mask`` ``(B, 784)`` bool -> ``(B, 10)``, what
    :meth:`~envs.perception.PerceptionCore.replay` of those pixels gives (in any order) for a core whose
    state weights are zero.

    A mask may hold hundreds of pixels (GDFS's random masks keep a uniformly drawn fraction of the
    image), most of them background: a pixel of value 0 adds the same increment in every image, so
    those 784 increments are computed once per call and summed by one product with the mask; only
    the pixels with ink are encoded one by one (about a fifth of an MNIST image).

    :raises ValueError: if the core's state weights are not all zero.
    """
    _check_order_free(core, "mask_logits")
    centres = pixel_centres(images.device)
    empty = core.initial_histogram(1, images.device)
    background = core.increments(empty, centres[None], torch.zeros_like(centres[None, :, 0]))[0]  # (784, H)
    histogram = (mask & (images == 0)).to(background.dtype) @ background
    rows, pixels = (mask & (images != 0)).nonzero(as_tuple=True)
    ink = core.increments(empty, centres[pixels][None], images[rows, pixels][None])[0]  # (N_ink, H)
    return core(histogram.index_add(0, rows, ink))


def prefix_logits(core: PerceptionCore, coords: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The logits after each prefix of ``L`` glimpses, ``coords`` ``(B, L, 2)`` pixel units and ``values``
    ``(B, L)`` -> ``(L, B, 10)``, in set form: what :meth:`~envs.perception.PerceptionCore.replay` gives
    for a core whose state weights are zero, computed in one pass rather than ``L``."""
    steps = values.shape[1]
    # Laid out (L, B): the L glimpse slots are the rows that share the empty state (L, H). The prefix
    # sums are one product with the lower-triangular ones (much faster than cumsum on the CPU).
    empty = core.initial_histogram(steps, values.device)
    increments = core.increments(empty, coords.transpose(0, 1), values.T)  # (L, B, H)
    prefix = torch.ones(steps, steps, device=values.device).tril()  # prefix[t, s] = 1 for s <= t
    return core((prefix @ increments.flatten(1)).view_as(increments))  # head(h_1 .. h_L)
