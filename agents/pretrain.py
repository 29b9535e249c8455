"""Pretraining the perception core before an agent uses it (the warm start of every agent's core).

* :func:`pretrain_core`, on random glimpses: one step draws a batch of training images, glimpses each
  ``T`` times at uniformly random locations (:class:`~agents.baselines.RandomGlimpses`), and takes an
  Adam step on the perception loss over all glimpses. ``train/pretrain_perception.py`` runs it alone;
  ``train/differentiable.py --core-start pretrain`` runs it before training its agent.
* :func:`pretrain_core_on_pixels`, in set form on exact pixels: while the core's weights on its
  state are zero it is a plain SoftOrdering (order-free), so one step scores every prefix of a random
  subset of pixels at once (:meth:`~envs.perception.PerceptionCore.prefix_logits`; ``train/differentiable.py --core-start pretrain
  --pretrain-on pixels``); :meth:`~envs.perception.PerceptionCore.mask_logits` scores any set of pixels of
  an image, given as a mask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from agents.baselines import RandomGlimpses
from agents.rollout import run_episodes
from envs.data import IMAGE_SIZE, MnistSplit
from envs.episode import read_candidates, read_pixels
from envs.perception import PerceptionCore, perception_loss
from envs.sampler import Sampler, pixel_centres


def pretrain_core(
    core: PerceptionCore,
    data: MnistSplit,
    steps: int,
    batch_size: int = 256,
    max_glimpses: int = 25,
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
    if steps < 0 or batch_size < 1 or max_glimpses < 1:
        raise ValueError(
            f"pretrain_core needs steps >= 0, batch_size >= 1 and max_glimpses >= 1; got {steps}, {batch_size}, {max_glimpses}."
        )
    device = data.images.device
    policy, sampler = RandomGlimpses(), sampler or Sampler("bilinear")

    def batch_loss() -> torch.Tensor:
        batch = torch.randint(len(data), (batch_size,), device=device)
        images = data.images[batch].float() / 255.0
        episode = run_episodes(policy, core, sampler, images, max_glimpses)
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
    core.require_order_free("pretrain_core_on_pixels")
    device = data.images.device
    centres = pixel_centres(device)

    def batch_loss() -> torch.Tensor:
        batch = torch.randint(len(data), (batch_size,), device=device)
        chosen = torch.rand(batch_size, IMAGE_SIZE * IMAGE_SIZE, device=device).argsort(dim=1)[:, :pixels]
        values = read_pixels(data.images[batch].flatten(1).float() / 255.0, chosen)  # (B, L)
        return perception_loss(core.prefix_logits(centres[chosen], values), data.labels[batch])

    return _adam_steps(core, batch_loss, steps, learning_rate, report, max_seconds)


#: The glimpse sets :func:`pretrain_core_general` trains on, each a share of every batch:
#:
#: * ``continuous-bilinear`` / ``continuous-nearest``: ``L`` uniformly random continuous locations in
#:   ``[0, 27]^2``, read with that sampler (what a random policy of the default env and of
#:   ``sampler="nearest"`` produces; repeats and off-centre reads included);
#: * ``pixels``: ``L`` distinct pixels drawn uniformly, read exactly at their centres (random pixel
#:   actions; every prefix is a uniform subset of 1..L pixels);
#: * ``uniform-masks``: GDFS's random masks, each pixel kept with a probability drawn uniformly per image
#:   (``rand(B, 784) > rand(B, 1)``), read as a set (:meth:`~envs.perception.PerceptionCore.mask_logits`);
#: * ``trajectories``: recorded glimpses of trained agents on the training images, in their order;
#: * ``repeats``: what a policy that settles on a few places produces: ``L`` uniformly random continuous
#:   locations read with ``bilinear``, of which every glimpse from a random point ``c`` in ``0..L-1``
#:   on goes back to one of ``k`` (1..3) random places. An ablation, out of the packaged recipe: with it
#:   a core still reads a set that ends on one place far worse than the set's distinct glimpses alone
#:   (``docs/studies/general-core.md``).
GENERAL_SOURCES = (
    "continuous-bilinear",
    "continuous-nearest",
    "pixels",
    "uniform-masks",
    "trajectories",
    "repeats",
)

#: ``repeats``: the most places a set settles on
MAX_REPEATED_PLACES = 3


def repeated_coords(batch: int, length: int, device: torch.device | str) -> torch.Tensor:
    """``(B, L, 2)`` pixel-unit locations for the ``repeats`` source: uniform in ``[0, 27]^2`` up to a
    random glimpse ``c_b`` in ``0..L-1`` per set, then each glimpse one of ``k_b`` (1..3) random places."""
    coords = torch.rand(batch, length, 2, device=device) * (IMAGE_SIZE - 1)
    places = torch.rand(batch, MAX_REPEATED_PLACES, 2, device=device) * (IMAGE_SIZE - 1)
    count = torch.randint(1, MAX_REPEATED_PLACES + 1, (batch, 1), device=device)  # k_b
    which = (torch.rand(batch, length, device=device) * count).long()  # uniform in 0..k_b-1
    start = torch.randint(0, length, (batch, 1), device=device)  # c_b
    settled = torch.arange(length, device=device) >= start  # (B, L)
    return torch.where(settled[..., None], places.gather(1, which[..., None].expand(-1, -1, 2)), coords)


def general_logits(
    core: PerceptionCore,
    source: str,
    images: torch.Tensor,
    length: int,
    trajectory: tuple[torch.Tensor, torch.Tensor] | None = None,
    scored: torch.Tensor | None = None,
) -> torch.Tensor:
    """The logits of one :data:`GENERAL_SOURCES` glimpse set on ``images`` ``(B, 784)`` in ``[0, 1]``,
    in set form: ``(L, B, 10)`` after each prefix of ``L = length`` glimpses (``(K, B, 10)`` after the
    prefixes ``scored``, as :meth:`~envs.perception.PerceptionCore.prefix_logits`), or ``(1, B, 10)`` for ``uniform-masks``.

    :param trajectory: ``(coords (B, T, 2), values (B, T))``, the ``trajectories`` source's glimpses of
        these images (all ``T`` of them are read).
    :raises ValueError: for an unknown source, or ``trajectories`` without a trajectory.
    """
    batch, device = images.shape[0], images.device
    if source == "uniform-masks":
        mask = torch.rand(batch, IMAGE_SIZE * IMAGE_SIZE, device=device) > torch.rand(batch, 1, device=device)
        return core.mask_logits(images, mask)[None]
    if source == "pixels":
        chosen = torch.rand(batch, IMAGE_SIZE * IMAGE_SIZE, device=device).argsort(dim=1)[:, :length]
        return core.prefix_logits(pixel_centres(device)[chosen], read_pixels(images, chosen), scored)
    if source == "trajectories":
        if trajectory is None:
            raise ValueError("general_logits: the 'trajectories' source needs recorded glimpses (trajectory=).")
        return core.prefix_logits(*trajectory, scored=scored)
    if source in ("continuous-bilinear", "continuous-nearest", "repeats"):
        if source == "repeats":
            coords, sampler = repeated_coords(batch, length, device), Sampler("bilinear")
        else:
            coords = torch.rand(batch, length, 2, device=device) * (IMAGE_SIZE - 1)
            sampler = Sampler(source.removeprefix("continuous-"))
        values = read_candidates(sampler, images.view(batch, IMAGE_SIZE, IMAGE_SIZE), coords)
        return core.prefix_logits(coords, values, scored)
    raise ValueError(f"Unknown glimpse source {source!r}; valid sources are {list(GENERAL_SOURCES)}.")


def general_loss(
    core: PerceptionCore,
    sources: dict[str, float],
    images: torch.Tensor,
    labels: torch.Tensor,
    length: int,
    trajectories: tuple[torch.Tensor, torch.Tensor] | None = None,
    prefixes: int | None = None,
) -> torch.Tensor:
    """The mixture's loss on one batch: ``sum_s w_s CE_s / sum_s w_s`` over ``sources`` (name -> weight
    ``w_s``), each source reading its own equal slice of ``images`` ``(B, 784)`` / ``labels`` ``(B,)``
    (``trajectories``: the recorded glimpses of those same rows). ``CE_s`` is
    :func:`~envs.perception.perception_loss` over every prefix of the source's glimpse set, or over
    ``prefixes`` prefix lengths drawn without replacement (an unbiased estimate at a fraction of the cost)."""
    names = [name for name, weight in sources.items() if weight > 0]
    slices = torch.arange(images.shape[0], device=images.device).tensor_split(len(names))
    total = images.new_zeros(())
    for name, rows in zip(names, slices):
        trajectory = (trajectories[0][rows], trajectories[1][rows]) if name == "trajectories" else None
        steps = trajectory[1].shape[1] if trajectory is not None else length
        scored = None
        if prefixes is not None and prefixes < steps:
            scored = torch.randperm(steps, device=images.device)[:prefixes]
        logits = general_logits(core, name, images[rows], length, trajectory, scored)
        total = total + sources[name] * perception_loss(logits, labels[rows])
    return total / sum(sources[name] for name in names)


@dataclass
class GeneralValidation:
    """What :func:`pretrain_core_general` measured at one validation point."""

    step: int
    loss: float
    accuracy: dict[str, float]  # source -> accuracy after the last glimpse of its set


def validate_general(
    core: PerceptionCore,
    sources: dict[str, float],
    images: torch.Tensor,
    labels: torch.Tensor,
    length: int,
    trajectories: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 1000,
) -> tuple[float, dict[str, float]]:
    """``(loss, accuracy by source)`` of ``core`` on held-out ``images`` ``(N, 784)``: every source reads
    every image (the same glimpse sets at every call: drawn from a generator seeded with ``seed``,
    torch's global generator left as it was). The loss is the mixture's weighted mean cross-entropy."""
    names = [name for name, weight in sources.items() if weight > 0]
    losses = dict.fromkeys(names, 0.0)
    correct = dict.fromkeys(names, 0.0)
    was_training = core.training
    core.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            for name in names:
                trajectory = (trajectories[0][rows], trajectories[1][rows]) if name == "trajectories" else None
                logits = general_logits(core, name, images[rows], length, trajectory)
                losses[name] += perception_loss(logits, labels[rows]).item() * len(labels[rows])
                correct[name] += (logits[-1].argmax(-1) == labels[rows]).sum().item()
    core.train(was_training)
    loss = sum(sources[name] * losses[name] for name in names) / sum(sources[name] for name in names) / len(images)
    return loss, {name: correct[name] / len(images) for name in names}


#: learning-rate schedules of :func:`pretrain_core_general`: name -> factor of the rate after ``done`` of ``steps`` steps
LR_DECAYS: dict[str, Callable[[int, int], float]] = {
    "constant": lambda done, steps: 1.0,
    "cosine": lambda done, steps: 0.5 * (1.0 + math.cos(math.pi * min(done, steps) / steps)),
}


def pretrain_core_general(
    core: PerceptionCore,
    train: MnistSplit,
    validation: MnistSplit,
    sources: dict[str, float],
    steps: int,
    batch_size: int = 256,
    length: int = 50,
    learning_rate: float = 3e-3,
    trajectories: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    eval_every: int = 250,
    patience: int = 4,
    max_seconds: float = math.inf,
    lr_decay: str = "constant",
    prefixes: int | None = 10,
    report: Callable[[int, float], None] | None = None,
    on_validation: Callable[[GeneralValidation], None] | None = None,
) -> list[GeneralValidation]:
    """Train ``core`` in place, in set form, on the mixture of glimpse sets ``sources`` (name in
    :data:`GENERAL_SOURCES` -> weight), and leave it at its best validation point.

    Each Adam step draws ``batch_size`` training images, split evenly among the sources
    (:func:`general_loss`). Every ``eval_every`` steps :func:`validate_general` scores ``validation``;
    the weights of the lowest validation loss are kept, and training stops early after
    ``patience`` validations without a new best, after ``steps`` steps, or after the step that passes
    ``max_seconds`` of wall clock. As :func:`pretrain_core_on_pixels`, the core's state weights stay at
    zero, so the core reads every glimpse set in any order the same way.

    :param prefixes: prefix lengths scored per source and step (:func:`general_loss`; ``None``: all).
    :param lr_decay: ``"constant"`` keeps ``learning_rate``; ``"cosine"`` lowers it along half a cosine
        to zero at step ``steps`` (a run stopped sooner, by patience or ``max_seconds``, ends part-way).
    :param trajectories: ``(train, validation)`` recorded glimpses ``(coords (N, T, 2), values (N, T))``
        of the images of each split, for the ``trajectories`` source.
    :return: the validation points, in order.
    :raises ValueError: for bad sizes, an unknown source, or a core whose state weights are not zero.
    """
    unknown = sorted(set(sources) - set(GENERAL_SOURCES))
    if unknown or not any(weight > 0 for weight in sources.values()):
        raise ValueError(
            f"pretrain_core_general needs sources among {list(GENERAL_SOURCES)} with a positive weight; got {sources}."
        )
    if min(sources.values()) < 0:
        raise ValueError(f"pretrain_core_general: source weights must be >= 0, got {sources}.")
    if steps < 0 or batch_size < len(sources) or not 1 <= length <= IMAGE_SIZE * IMAGE_SIZE or eval_every < 1:
        raise ValueError(
            "pretrain_core_general needs steps >= 0, batch_size >= the number of sources, 1 <= length <= 784 and "
            f"eval_every >= 1; got {steps}, {batch_size}, {length}, {eval_every}."
        )
    if sources.get("trajectories", 0) > 0 and trajectories is None:
        raise ValueError("pretrain_core_general: the 'trajectories' source needs trajectories=(train, validation).")
    if lr_decay not in LR_DECAYS:
        raise ValueError(f"pretrain_core_general: lr_decay must be one of {list(LR_DECAYS)}, got {lr_decay!r}.")
    core.require_order_free("pretrain_core_general")
    device = train.images.device
    train_images = train.images.flatten(1).float() / 255.0
    val_images = validation.images.flatten(1).to(device).float() / 255.0
    val_labels = validation.labels.to(device)
    train_trajectory, val_trajectory = trajectories if trajectories is not None else (None, None)
    optimizer = torch.optim.Adam(core.parameters(), lr=learning_rate)
    scale = LR_DECAYS[lr_decay]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: scale(done, max(steps, 1)))
    history: list[GeneralValidation] = []
    best_loss, best_state, waited = math.inf, None, 0
    start = time.time()

    def validate(step: int) -> bool:
        """Score, keep the best weights; True while training should go on."""
        nonlocal best_loss, best_state, waited
        loss, accuracy = validate_general(core, sources, val_images, val_labels, length, val_trajectory)
        history.append(GeneralValidation(step, loss, accuracy))
        if on_validation is not None:
            on_validation(history[-1])
        if loss < best_loss:
            best_loss, waited = loss, 0
            best_state = {key: value.detach().clone() for key, value in core.state_dict().items()}
        else:
            waited += 1
        return waited < patience

    core.train()
    for step in range(1, steps + 1):
        batch = torch.randint(len(train_images), (batch_size,), device=device)
        trajectory = (train_trajectory[0][batch], train_trajectory[1][batch]) if train_trajectory else None
        loss = general_loss(core, sources, train_images[batch], train.labels[batch], length, trajectory, prefixes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if report is not None:
            report(step, loss.item())
        out_of_time = time.time() - start > max_seconds
        if step % eval_every == 0 or step == steps or out_of_time:
            if not validate(step) or out_of_time:
                break
    if not history:
        validate(0)
    if best_state is not None:
        core.load_state_dict(best_state)
    core.eval()
    return history
