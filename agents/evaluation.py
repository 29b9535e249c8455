"""Test accuracy after each glimpse, through the environment: the one evaluation path of every agent.

Reported accuracies use the ``nearest`` sampler: each glimpse reads one real pixel.
"""

from __future__ import annotations

import torch

from agents.rollout import GlimpsePolicy
from envs.data import load_mnist
from envs.perception import PerceptionCore
from envs.sampler import Sampler


@torch.no_grad()
def accuracy_by_glimpse(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    max_glimpses: int,
    sampler: Sampler | str | None = None,
    split: str = "test",
    batch_size: int = 2500,
    device: torch.device | str = "cpu",
    limit: int | None = None,
) -> torch.Tensor:
    """Fraction of ``split`` classified correctly after each glimpse ``t = 1..T``: a ``(T,)`` tensor,
    through the environment (:func:`play`, a batch of ``batch_size`` images at a time).

    :param sampler: the read-out; default ``nearest`` (one real pixel per glimpse).
    :param batch_size: images per environment (memory only; the result does not depend on it,
        except through a policy's own randomness).
    :param limit: the first ``limit`` images of the split only (default: all).
    """
    data = load_mnist(split, device)
    size = len(data) if limit is None else limit
    correct = torch.zeros(max_glimpses, device=device)
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        images, labels = data.images[start:stop], data.labels[start:stop]
        correct += accuracy_on(policy, core, images, labels, max_glimpses, sampler) * labels.shape[0]
    return correct / size


@torch.no_grad()
def accuracy_on(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    sampler: Sampler | str | None = None,
) -> torch.Tensor:
    """Fraction of one batch classified correctly after each glimpse: a ``(T,)`` tensor (:func:`play`).

    :param images: ``uint8`` ``(B, 28, 28)`` grey levels.
    :param labels: ``(B,)`` true classes.
    :param sampler: the read-out; default ``nearest`` (one real pixel per glimpse).
    """
    correct, _, _ = play(policy, core, images, labels, max_glimpses, sampler)
    return correct.float().mean(dim=1)


@torch.no_grad()
def agent_glimpses(
    policy: GlimpsePolicy, core: PerceptionCore, max_glimpses: int, images: torch.Tensor, batch_size: int = 2500
) -> tuple[torch.Tensor, torch.Tensor]:
    """The glimpses an agent (``policy`` reading with ``core``) takes on ``images`` (``uint8``
    ``(N, 28, 28)``) with the ``nearest`` read-out, through the environment (:func:`play`):
    ``coords`` ``(N, T, 2)`` pixel units, ``values`` ``(N, T)``."""
    coords, values = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        labels = torch.zeros(len(batch), dtype=torch.long, device=batch.device)  # unused: only the glimpses count
        _, coords_b, values_b = play(policy, core, batch, labels, max_glimpses)
        coords.append(coords_b)
        values.append(values_b)
    return torch.cat(coords), torch.cat(values)


@torch.no_grad()
def play(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    sampler: Sampler | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One episode of ``policy`` on each image, in one :class:`~envs.vector_env.MnistGlimpseVectorEnv`
    (made with ``core``, ``sampler``, the images' device): the one evaluation path of every agent.

    A policy that picks pixels (``choose``, e.g. :class:`~agents.pixel_attention.PixelAttention`) acts
    with ``action_type="pixel"`` on ``obs_type="record"``; any other with continuous actions on the
    default observation, ``policy(observation, t)``.

    :param images: ``uint8`` ``(B, 28, 28)`` grey levels.
    :param labels: ``(B,)`` true classes.
    :param sampler: the read-out; default ``nearest`` (one real pixel per glimpse).
    :return: ``correct`` ``(T, B)`` bool (the argmax of the logits after glimpse ``t + 1`` is the label),
        ``coords`` ``(B, T, 2)`` the glimpses (pixel units) and ``values`` ``(B, T)`` the values read.
    """
    from envs.vector_env import MnistGlimpseVectorEnv

    pixel = hasattr(policy, "choose")
    env = MnistGlimpseVectorEnv(
        len(labels),
        max_glimpses,
        split="test",
        sampler=sampler or "nearest",
        perception=core,
        device=images.device,
        array_type="torch",
        obs_type="record" if pixel else "summary",
        action_type="pixel" if pixel else "continuous",
    )
    observation, _ = env.reset(seed=0, options={"image": images.cpu().numpy(), "label": labels.cpu().numpy()})
    correct, coords, values = [], [], []
    for step in range(max_glimpses):
        action = policy.choose(observation, step) if pixel else policy(observation, step)
        observation, _, _, _, info = env.step(action)  # next_step autoreset: the last step ends, no reset yet
        correct.append(env.sim.state.logits.argmax(dim=-1) == labels)
        coords.append(info["glimpse"])
        values.append(info["value"])
    return torch.stack(correct), torch.stack(coords, dim=1), torch.stack(values, dim=1)
