"""Pretraining the perception core on uniformly random glimpses (the warm start of every agent's core).

One step: draw a batch of training images, glimpse each ``T`` times at uniformly random locations
(:class:`~agents.baselines.RandomGlimpses`), and take an Adam step on the perception loss over all
glimpses. ``train/pretrain_perception.py`` runs it alone; ``train/differentiable.py --core pretrain``
runs it before training its agent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from agents.baselines import RandomGlimpses
from agents.rollout import run_episodes
from envs.data import MnistSplit
from envs.perception import PerceptionCore, perception_loss
from envs.sampler import Sampler


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
    optimizer = torch.optim.Adam(core.parameters(), lr=learning_rate)
    core.train()
    start = time.time()
    for step in range(steps):
        if time.time() - start > max_seconds:
            break
        batch = torch.randint(len(data), (batch_size,), device=device)
        images = data.images[batch].float() / 255.0
        episode = run_episodes(policy, core, sampler, images, glimpses)
        loss = perception_loss(episode.logits, data.labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if report is not None:
            report(step, loss.item())
    return core
