"""Greedy dynamic feature selection (GDFS; Covert et al., ICML 2023), on the 784 pixels of MNIST.

GDFS learns two networks that both read the pixels seen so far as ``cat(x * m, m)`` (``x`` the image
in ``[0, 1]``, ``m`` the 0/1 mask of the pixels read), each an MLP 1568 -> 512 -> 512 -> out with
ReLU and dropout 0.3 (:class:`MaskedMLP`):

* the **predictor** (10 outputs) classifies from any set of pixels;
* the **selector** (:class:`PixelSelector`, 784 outputs) scores the pixel to read next.

Training has two stages (``train/gdfs.py`` runs them, epoch by epoch):

1. :func:`predictor_step`: the predictor alone on random masks of uniformly random size
   (:func:`random_masks`).
2. :func:`selector_step`, at each temperature of a geometric schedule: one episode of ``T`` greedy
   selections per batch; at each, a Concrete (relaxed one-hot) sample of the selector's scores is
   merged into the mask, the predictor's cross-entropy on that soft mask is back-propagated into
   both networks (divided by ``T``), and the hard mask grows by one pixel drawn by the Gumbel-max
   trick among the unread ones; one optimizer step per batch. :func:`validate_selection` scores an
   epoch with sampled selections (the soft masks' loss, which drives the plateau and early stopping)
   and with their hard counterparts (the loss that picks the final weights).

Acting (:class:`GdfsAgent`) takes the selector's highest-scoring unread pixel and classifies with
the predictor: in the environment it acts with ``action_type="pixel"`` on ``obs_type="record"``,
whose ``mask`` and ``pixels`` are exactly ``m`` and ``x * m`` (:func:`accuracy_in_env`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import RelaxedOneHotCategorical
from torch.nn import functional as F

from envs.atomic import write_atomic
from envs.data import IMAGE_SIZE, NUM_CLASSES
from envs.digest import check_digest, with_digest

#: Pixels of an image: the selector's choices and the mask's size.
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
#: GDFS's scale of the selector's scores inside the Concrete distribution (``logits / 0.2``).
LOGIT_SCALE = 0.2
#: The penalty that keeps read pixels out of a choice (``logits - 1e6 * m``), as GDFS applies it.
READ_PENALTY = 1e6
#: The format tag of ``gdfs.pt``.
GDFS_FORMAT = "mnist-glimpse/gdfs/v1"


class MaskedMLP(nn.Module):
    """An MLP on the pixels read: ``net(cat(x * m, m))``, ``2 * 784 -> hidden -> hidden -> outputs``,
    ReLU and dropout after each hidden layer. With 10 outputs it is GDFS's predictor.

    :param outputs: output units (10: class logits; 784: pixel scores).
    :param hidden: width of the two hidden layers.
    :param dropout: dropout probability after each hidden layer (active in train mode only).
    """

    def __init__(self, outputs: int = NUM_CLASSES, hidden: int = 512, dropout: float = 0.3) -> None:
        super().__init__()
        if outputs < 1 or hidden < 1:
            raise ValueError(f"MaskedMLP needs outputs >= 1 and hidden >= 1, got {outputs} and {hidden}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MaskedMLP dropout must be in [0, 1), got {dropout}.")
        self.outputs, self.hidden, self.dropout = outputs, hidden, dropout
        self.net = nn.Sequential(
            nn.Linear(2 * NUM_PIXELS, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, outputs)`` from ``images`` ``(B, 784)`` in ``[0, 1]`` (or already ``x * m``) and ``mask``
        ``(B, 784)`` in ``[0, 1]`` (0/1, or a soft mask during training)."""
        if images.shape[-1] != NUM_PIXELS or mask.shape != images.shape:
            raise ValueError(
                f"MaskedMLP reads flat images and masks of {NUM_PIXELS} pixels each, got {tuple(images.shape)} "
                f"and {tuple(mask.shape)}: flatten (B, 28, 28) images with .flatten(1)."
            )
        return self.net(torch.cat([images * mask, mask], dim=-1))


class PixelSelector(MaskedMLP):
    """GDFS's selector: a :class:`MaskedMLP` that scores the 784 pixels (row-major, ``i * 28 + j``)."""

    def __init__(self, hidden: int = 512, dropout: float = 0.3) -> None:
        super().__init__(NUM_PIXELS, hidden, dropout)

    def choose(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The highest-scoring unread pixel, ``(B,)`` indices (a read pixel is never chosen again)."""
        scores = self(images, mask)
        return scores.masked_fill(mask > 0, float("-inf")).argmax(dim=-1)


def random_masks(batch: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """GDFS's pretraining masks, ``(batch, 784)`` of 0/1: each row keeps each pixel with one
    probability drawn uniformly per row (``rand(B, 784) > rand(B, 1)``), so every mask size is as
    likely as any other.

    :param generator: the random stream (default: torch's global one).
    """
    keep = torch.rand(batch, NUM_PIXELS, device=device, generator=generator)
    return (keep > torch.rand(batch, 1, device=device, generator=generator)).float()


def predictor_step(
    predictor: MaskedMLP, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """One stage-1 optimizer step: the predictor's cross-entropy on ``images`` ``(B, 784)`` seen
    through :func:`random_masks`. Returns the loss."""
    mask = random_masks(images.shape[0], images.device)
    loss = F.cross_entropy(predictor(images, mask), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def concrete_sample(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A reparameterised sample ``(B, 784)`` of the Concrete (relaxed one-hot) distribution of
    ``logits`` at ``temperature``. The distribution's check that its probabilities sum to 1 is off:
    a peaked float32 softmax can miss that by more than its tolerance."""
    temperature = torch.tensor(temperature, device=logits.device)
    return RelaxedOneHotCategorical(temperature, logits=logits, validate_args=False).rsample()


def gumbel_choice(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One unread pixel per row drawn from ``softmax((scores - 1e6 * m) / 0.2)`` by the Gumbel-max
    trick, as a one-hot ``(B, 784)`` (no gradient)."""
    logits = (scores.detach() - READ_PENALTY * mask) / LOGIT_SCALE
    uniform = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)
    choice = (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)
    return F.one_hot(choice, NUM_PIXELS).to(mask.dtype)


def selector_step(
    selector: PixelSelector,
    predictor: MaskedMLP,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    temperature: float,
) -> float:
    """One stage-2 optimizer step over both networks: ``max_glimpses`` greedy selections from the empty
    mask, each trained on the predictor's loss right after it (its gradient back-propagated at once,
    divided by ``max_glimpses``). Returns the mean loss over the selections.

    At each selection ``soft ~ Concrete(temperature, scores / 0.2)``, the predictor reads
    ``max(m, soft)``, and ``m`` then gains the pixel of :func:`gumbel_choice` (never one read before).

    :param images: ``(B, 784)`` in ``[0, 1]``; :param labels: ``(B,)``.
    :param temperature: the Concrete relaxation's temperature (> 0).
    """
    optimizer.zero_grad(set_to_none=True)
    mask = images.new_zeros(images.shape)
    total = images.new_zeros(())  # summed on the device: no synchronisation per selection
    for _ in range(max_glimpses):
        scores = selector(images, mask)
        soft_mask = torch.maximum(mask, concrete_sample(scores / LOGIT_SCALE, temperature))
        loss = F.cross_entropy(predictor(images, soft_mask), labels)
        (loss / max_glimpses).backward()
        total += loss.detach()
        mask = torch.maximum(mask, gumbel_choice(scores, mask))
    optimizer.step()
    return float(total) / max_glimpses


@torch.no_grad()
def validate_predictor(
    predictor: MaskedMLP, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, batch_size: int = 1000
) -> float:
    """The predictor's mean cross-entropy (eval mode, restored after) on ``images`` ``(N, 784)`` seen
    through the fixed ``masks`` ``(N, 784)``."""
    mode = predictor.training
    predictor.eval()
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        end = start + batch_size
        logits = predictor(images[start:end], masks[start:end])
        total += float(F.cross_entropy(logits, labels[start:end], reduction="sum"))
    predictor.train(mode)
    return total / images.shape[0]


@torch.no_grad()
def validate_selection(
    selector: PixelSelector,
    predictor: MaskedMLP,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    temperature: float,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """GDFS's validation of a stage-2 epoch (eval mode, restored after): ``(soft, hard)``, the
    predictor's mean cross-entropy over the ``max_glimpses`` selections and the images, with each
    selection sampled (``soft ~ Concrete(temperature, (scores - 1e6 * m) / 0.2)``), the predictor
    reading ``max(m, soft)`` (soft) or the hard mask ``m`` grown by the sample's argmax (hard)."""
    modes = [(net, net.training) for net in (selector, predictor)]
    selector.eval()
    predictor.eval()
    soft_total, hard_total = images.new_zeros(()), images.new_zeros(())
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        mask = x.new_zeros(x.shape)
        for _ in range(max_glimpses):
            logits = (selector(x, mask) - READ_PENALTY * mask) / LOGIT_SCALE
            soft = concrete_sample(logits, temperature).detach()
            soft_mask = torch.maximum(mask, soft)
            mask = torch.maximum(mask, F.one_hot(soft.argmax(dim=-1), NUM_PIXELS).to(mask.dtype))
            soft_total += F.cross_entropy(predictor(x, soft_mask), y, reduction="sum")
            hard_total += F.cross_entropy(predictor(x, mask), y, reduction="sum")
    for net, mode in modes:
        net.train(mode)
    count = images.shape[0] * max_glimpses
    return float(soft_total) / count, float(hard_total) / count


@torch.no_grad()
def accuracy_by_glimpse(
    selector: PixelSelector,
    predictor: MaskedMLP,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    batch_size: int = 2500,
) -> torch.Tensor:
    """Fraction of ``images`` ``(N, 784)`` in ``[0, 1]`` the predictor classifies correctly after
    each of ``max_glimpses`` argmax selections: a ``(T,)`` tensor (eval mode, restored after). The
    environment's evaluation (:func:`accuracy_in_env`) gives the same figures."""
    modes = [(net, net.training) for net in (selector, predictor)]
    selector.eval()
    predictor.eval()
    correct = torch.zeros(max_glimpses, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        mask = x.new_zeros(x.shape)
        rows = torch.arange(x.shape[0], device=x.device)
        for step in range(max_glimpses):
            mask[rows, selector.choose(x, mask)] = 1.0
            correct[step] += (predictor(x, mask).argmax(dim=-1) == y).sum()
    for net, mode in modes:
        net.train(mode)
    return correct / images.shape[0]


class GdfsAgent(nn.Module):
    """GDFS acting on the environment's record observation (``obs_type="record"``, ``action_type="pixel"``):
    the record's ``mask`` is ``m`` and its ``pixels`` (the grey levels read, 0 elsewhere) are ``x * m``.

    :param selector: the trained :class:`PixelSelector`.
    :param predictor: the trained predictor (:class:`MaskedMLP`, 10 outputs).
    """

    def __init__(self, selector: PixelSelector, predictor: MaskedMLP) -> None:
        super().__init__()
        self.selector, self.predictor = selector, predictor

    @staticmethod
    def _record(observation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(observation, dict) or "mask" not in observation or "pixels" not in observation:
            raise ValueError(
                "GdfsAgent reads the pixels read so far: make the environment with obs_type='record' "
                "(and action_type='pixel')."
            )
        return observation["pixels"].float(), observation["mask"].float()

    @torch.no_grad()
    def choose(self, observation: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The selector's highest-scoring unread pixel, ``(B,)`` indices ``i * 28 + j``: the action."""
        pixels, mask = self._record(observation)
        return self.selector.choose(pixels, mask)

    @torch.no_grad()
    def predict(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """The predictor's class logits ``(B, 10)`` from the pixels read so far."""
        pixels, mask = self._record(observation)
        return self.predictor(pixels, mask)


@torch.no_grad()
def accuracy_in_env(
    agent: GdfsAgent,
    max_glimpses: int,
    split: str = "test",
    batch_size: int = 2500,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    perception: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GDFS evaluated through the environment: each batch of images runs as one
    :class:`~envs.vector_env.MnistGlimpseVectorEnv` (``nearest`` read-out, pixel actions, record
    observation) in which the agent acts. Returns two ``(T,)`` accuracies after each glimpse:
    GDFS's own predictor on the pixels it chose, and the environment's core (``perception``, default
    the packaged one) reading the same glimpses.

    :param limit: the first ``limit`` images of the split only (default: all).
    """
    from envs.data import load_mnist
    from envs.vector_env import MnistGlimpseVectorEnv

    modes = [(net, net.training) for net in (agent.selector, agent.predictor)]
    agent.eval()
    size = len(load_mnist(split, device)) if limit is None else limit
    own = torch.zeros(max_glimpses, device=device)
    core = torch.zeros(max_glimpses, device=device)
    for start in range(0, size, batch_size):
        index = torch.arange(start, min(start + batch_size, size))
        env = MnistGlimpseVectorEnv(
            len(index),
            max_glimpses,
            split=split,
            sampler="nearest",
            perception=perception,
            device=device,
            array_type="torch",
            obs_type="record",
            action_type="pixel",
        )
        observation, _ = env.reset(options={"index": index.numpy()})
        labels = env.sim.labels.clone()
        for step in range(max_glimpses):
            observation, *_ = env.step(agent.choose(observation, step))  # next_step autoreset: the last one stays
            own[step] += (agent.predict(observation).argmax(dim=-1) == labels).sum()
            core[step] += (observation["summary"][:, -NUM_CLASSES:].argmax(dim=-1) == labels).sum()
    for net, mode in modes:
        net.train(mode)
    return own / size, core / size


def save_gdfs(path: str | Path, selector: PixelSelector, predictor: MaskedMLP, **extra: Any) -> None:
    """Write both networks (CPU tensors, with a digest) atomically to ``path``; ``extra``: JSON-like
    facts about the run (its arguments, run id)."""
    checkpoint = {
        "format": GDFS_FORMAT,
        "hidden": predictor.hidden,
        "dropout": predictor.dropout,
        "selector": {k: v.detach().cpu() for k, v in selector.state_dict().items()},
        "predictor": {k: v.detach().cpu() for k, v in predictor.state_dict().items()},
        **extra,
    }
    checkpoint = with_digest(checkpoint)
    write_atomic(path, lambda handle: torch.save(checkpoint, handle))


def load_gdfs(path: str | Path, device: torch.device | str = "cpu") -> tuple[GdfsAgent, dict[str, Any]]:
    """The :class:`GdfsAgent` saved by :func:`save_gdfs` (eval mode, on ``device``) and the file's contents.

    :raises ValueError: the file is not a GDFS checkpoint, or its digest does not match.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != GDFS_FORMAT:
        raise ValueError(f"{path} is not a GDFS checkpoint (train/gdfs.py writes OUT/gdfs.pt).")
    check_digest(checkpoint, str(path))
    selector = PixelSelector(checkpoint["hidden"], checkpoint["dropout"])
    predictor = MaskedMLP(NUM_CLASSES, checkpoint["hidden"], checkpoint["dropout"])
    selector.load_state_dict(checkpoint["selector"])
    predictor.load_state_dict(checkpoint["predictor"])
    agent = GdfsAgent(selector, predictor).to(device).eval()
    return agent, checkpoint
