"""What an agent's pixels are worth to GDFS-grade predictors, and whether a wide SoftOrdering core
reads them as well as GDFS's MLP.

The agent (``--agent DIR/checkpoint.pt``) reads 25 pixels of every training and test image with the
``nearest`` read-out, as in evaluation. Predictors are then trained on pixel sets and tested on the
10,000 test images, each with GDFS's recipe: Adam (``--lr``), batch ``--batch-size``, the last 10,000
training images as validation, a plateau of the validation loss cutting the learning rate (factor
0.2, patience 2) and stopping training two validations later (:class:`agents.schedule.Plateau`),
the best validated weights kept; one validation per epoch, at most ``--max-epochs`` epochs and
``--max-seconds`` per predictor.

Predictors:

* ``mlp``: GDFS's predictor, ``1568 -> 512 -> 512 -> 10``, ReLU, dropout 0.3, on the masked image
  and its mask ``[x * m, m]``.
* ``core CxB``: a :class:`~envs.perception.PerceptionCore` with the ``embedding`` encoding (a
  per-pixel code as wide as its ``C`` channels, ink and background apart; ``--encoding learned``:
  the best agent's 16 location features), ``B`` soft bins and a head like GDFS's (2 x 512, dropout 0.3). Its state weights stay zero, so it is order-free and reads a
  set of pixels in one pass (:meth:`envs.perception.PerceptionCore.mask_logits`,
  :meth:`envs.perception.PerceptionCore.prefix_logits`).

Training sets of pixels (``--masks``):

* ``agent``: the first ``T`` pixels the agent reads. One MLP per budget ``T`` in 5, 10, 25 (each
  its own input size of information); one core for all budgets, its loss the mean over the 25
  prefixes (the perception loss).
* ``uniform``: GDFS's pretraining masks, each pixel kept with a probability drawn uniformly per
  image, fresh every batch (the validation masks are drawn once). One predictor for all budgets.
  ``--uniform-max`` caps that probability: with ``0.064`` a mask holds 0 to about 50 pixels, the
  range an agent's budgets span, where GDFS's masks hold up to all 784 (a core's histogram counts
  the pixels read, so it sees counts far beyond an agent's 25).

Every predictor is tested on the agent's first ``T`` pixels and on ``T`` uniformly random distinct
pixels per test image (drawn once, seeded), ``T`` in 5, 10, 25.

    python experiments/pixel_value.py --agent runs/best/checkpoint.pt --out experiments/results/studies/pixel_value.json

The results: docs/studies/pixel-value.md (``pixel_value.json`` in experiments/results/studies/).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from torch import nn

from agents.checkpoint import load_agent
from agents.cli import UserFileExistsError, plain_text, run_main, user_errors
from agents.evaluation import agent_glimpses
from agents.schedule import Plateau
from envs.atomic import write_atomic
from envs.data import IMAGE_SIZE, NUM_CLASSES, load_mnist, shuffled_batches
from envs.perception import PerceptionConfig, PerceptionCore, perception_loss
from envs.sampler import pixel_centres

PIXELS = IMAGE_SIZE * IMAGE_SIZE
BUDGETS = (5, 10, 25)
VALIDATION = 10_000


@dataclass
class Args:
    agent: str
    """the agent whose pixels are valued: a checkpoint written by train/differentiable.py (DIR/checkpoint.pt)"""
    out: str
    """results JSON to write (refused if it exists)"""
    predictors: tuple[str, ...] = ("mlp", "core 256x4")
    """what to train: mlp and/or cores 'core CxB' (channels x soft bins)"""
    encoding: Literal["embedding", "learned"] = "embedding"
    """glimpse encoding of the cores (envs.perception.GlimpseEncoding): a per-pixel code as wide as the
    channels, started at random, or 16 location features per pixel started at Fourier features"""
    masks: tuple[Literal["agent", "uniform"], ...] = ("agent", "uniform")
    """training sets of pixels: the agent's first T pixels, and/or GDFS's uniform random masks"""
    uniform_max: float = 1.0
    """uniform masks: each pixel is kept with a probability drawn from U(0, uniform_max) per image (1: GDFS's)"""
    max_epochs: int = 40
    """epochs per predictor at most (early stopping usually ends it first)"""
    max_seconds: float = 1200.0
    """wall-clock seconds per predictor at most (after the epoch that passes it)"""
    batch_size: int = 128
    """images per Adam step"""
    lr: float = 1e-3
    """Adam learning rate before plateau cuts"""
    train_images: int = 50_000
    """training images used (the first ones; at most 50,000, the rest of the split is validation)"""
    seed: int = 0
    """seed of torch (initialisations, batches, masks, random pixels)"""
    torch_threads: int = 2
    """CPU threads for torch"""


class MaskedMLP(nn.Module):
    """GDFS's predictor on ``[x * m, m]``: ``(B, 784)`` grey levels and ``(B, 784)`` bool mask -> ``(B, 10)``."""

    def __init__(self, hidden: int = 512, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * PIXELS, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, NUM_CLASSES),
        )  # fmt: skip

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(images.dtype)
        return self.net(torch.cat([images * m, m], dim=-1))


def wide_core(spec: str, encoding: str = "embedding") -> PerceptionCore:
    """``"core CxB"`` -> a fresh order-free core with ``encoding`` and GDFS's head."""
    try:
        channels, n_bins = (int(part) for part in spec.removeprefix("core ").split("x"))
    except ValueError:
        raise ValueError(f"Unknown predictor {spec!r}: pass 'mlp' or 'core CxB', e.g. 'core 256x4'.") from None
    config = PerceptionConfig(channels, n_bins, hidden=512, encoding=encoding, head_layers=2, dropout=0.3)
    return PerceptionCore(config)


def first_pixels(coords: torch.Tensor, budget: int) -> torch.Tensor:
    """The mask ``(N, 784)`` of the first ``budget`` pixels of glimpses ``coords`` ``(N, T, 2)`` (pixel centres)."""
    flat = coords[:, :budget].round().long()
    index = flat[..., 0] * IMAGE_SIZE + flat[..., 1]
    return torch.zeros(len(coords), PIXELS, dtype=torch.bool).scatter_(1, index, True)


def random_pixels(n: int, budget: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 784)`` masks of ``budget`` distinct uniformly random pixels each."""
    index = torch.rand(n, PIXELS, generator=generator).argsort(dim=1)[:, :budget]
    return torch.zeros(n, PIXELS, dtype=torch.bool).scatter_(1, index, True)


def uniform_masks(n: int, generator: torch.Generator | None = None, high: float = 1.0) -> torch.Tensor:
    """GDFS's random masks ``(n, 784)``: each pixel kept with a probability drawn from ``U(0, high)`` per image."""
    keep = high * torch.rand(n, 1, generator=generator)
    return torch.rand(n, PIXELS, generator=generator) < keep


def read(model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, 10)`` of ``model`` (an MLP or an order-free core) on the pixels ``mask`` ``(B, 784)`` marks."""
    return model(images, mask) if isinstance(model, MaskedMLP) else model.mask_logits(images, mask)


def predict(model: nn.Module, images: torch.Tensor, mask: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
    """:func:`read` in chunks, without gradients: ``(N, 10)``."""
    with torch.no_grad():
        return torch.cat(
            [read(model, images[s : s + chunk], mask[s : s + chunk]) for s in range(0, len(images), chunk)]
        )


def fit(
    model: nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_train: int,
    validation_loss: Callable[[], float],
    args: Args,
) -> dict:
    """Train ``model`` with GDFS's recipe (module docstring) on index batches of ``range(n_train)``;
    leaves it in eval mode with its best validated weights and returns what happened."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    plateau, start, epoch = Plateau(patience=2), time.time(), 0
    for epoch in range(1, args.max_epochs + 1):
        model.train()
        for batch in shuffled_batches(n_train, args.batch_size, epochs=1):
            loss = batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        loss = validation_loss()
        plateau.update(loss, model.state_dict(), epoch)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * plateau.scale
        print(f"    epoch {epoch}: validation loss {loss:.4f}, lr {args.lr * plateau.scale:.1e}", flush=True)
        if plateau.stop or time.time() - start > args.max_seconds:
            break
    model.load_state_dict(plateau.best_state)
    model.eval()
    return {"epochs": epoch, "best_epoch": plateau.best_step, "validation_loss": round(plateau.best_loss, 4),
            "seconds": round(time.time() - start, 1)}  # fmt: skip


def main(args: Args) -> None:
    out = Path(args.out)
    if out.exists():
        raise UserFileExistsError(f"{out} exists; pass another --out or remove it.")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.torch_threads)
    for spec in args.predictors:
        if spec != "mlp":
            wide_core(spec, args.encoding)  # refuse a bad spec before the long part
    train, test = load_mnist("train"), load_mnist("test")
    with user_errors(ValueError, FileNotFoundError):  # an --agent that cannot be used
        policy, agent_core, checkpoint = load_agent(args.agent)
    start = time.time()
    coords, agent_values = agent_glimpses(policy, agent_core, checkpoint["glimpses"], train.images)
    test_coords, test_values = agent_glimpses(policy, agent_core, checkpoint["glimpses"], test.images)
    print(f"the agent's glimpses of 70,000 images: {time.time() - start:.0f} s", flush=True)
    with torch.no_grad():
        own = agent_core.replay(test_coords, test_values)
    own_accuracy = {t: (own[t - 1].argmax(-1) == test.labels).float().mean().item() for t in BUDGETS}

    images = train.images.flatten(1).float() / 255.0
    test_images, labels, test_labels = test.images.flatten(1).float() / 255.0, train.labels, test.labels
    n_train = min(args.train_images, len(images) - VALIDATION)
    val = slice(len(images) - VALIDATION, None)
    generator = torch.Generator().manual_seed(args.seed)
    val_uniform = uniform_masks(VALIDATION, generator, args.uniform_max)
    test_sets = {
        **{f"agent {t}": first_pixels(test_coords, t) for t in BUDGETS},
        **{f"random {t}": random_pixels(len(test_images), t, generator) for t in BUDGETS},
    }
    flat = coords.round().long()
    agent_pixels = flat[..., 0] * IMAGE_SIZE + flat[..., 1]  # (N, 25) pixel indices, in reading order
    agent_centres = pixel_centres()[agent_pixels]

    def prefix_loss(model: nn.Module, batch: torch.Tensor | slice) -> torch.Tensor:
        """The perception loss of an order-free core on every prefix of the agent's pixels, in one pass."""
        return perception_loss(model.prefix_logits(agent_centres[batch], agent_values[batch]), labels[batch])

    def accuracy(model: nn.Module, name: str) -> float:
        logits = predict(model, test_images, test_sets[name])
        return round(100 * (logits.argmax(-1) == test_labels).float().mean().item(), 2)

    rows: list[dict] = []
    plan = [
        (masks, spec, budget)
        for masks in args.masks
        for spec in args.predictors
        for budget in (BUDGETS if (masks, spec) == ("agent", "mlp") else (None,))
    ]
    for masks, spec, budget in plan:
        torch.manual_seed(args.seed)
        model = MaskedMLP() if spec == "mlp" else wide_core(spec, args.encoding)
        label = f"{spec}, {masks} masks" + ("" if budget is None else f", T = {budget}")
        print(f"{label} ({sum(p.numel() for p in model.parameters()):,} parameters)", flush=True)

        if masks == "uniform":  # fresh masks every batch, fixed ones for validation
            train_mask, val_mask = None, val_uniform
        elif spec == "mlp":
            train_mask = first_pixels(coords, budget)
            val_mask = train_mask[val]
        else:  # a core on the agent's prefixes: every budget 1..25 in one pass, as the agent's core
            train_mask = val_mask = None

        def batch_loss(batch: torch.Tensor, model=model, train_mask=train_mask, masks=masks) -> torch.Tensor:
            if masks == "agent" and train_mask is None:
                return prefix_loss(model, batch)
            mask = uniform_masks(len(batch), high=args.uniform_max) if masks == "uniform" else train_mask[batch]
            return nn.functional.cross_entropy(read(model, images[batch], mask), labels[batch])

        def validation_loss(model=model, val_mask=val_mask) -> float:
            if val_mask is None:  # the training objective, the mean over the 25 prefixes
                with torch.no_grad():
                    return prefix_loss(model, val).item()
            logits = predict(model, images[val], val_mask)
            return nn.functional.cross_entropy(logits, labels[val]).item()

        record = fit(model, batch_loss, n_train, validation_loss, args)
        tests = {name: accuracy(model, name) for name in test_sets
                 if budget is None or name.endswith(f" {budget}")}  # fmt: skip
        rows.append({"predictor": spec, "masks": masks, "budget": budget, **record, "test_accuracy": tests})
        print(f"  {label}: {tests} ({record['seconds']:.0f} s)", flush=True)
        # after every predictor: a stopped run keeps its rows
        write_results(out, args, own_accuracy, rows, complete=len(rows) == len(plan))
    print(f"wrote {out}")


def write_results(out: Path, args: Args, own_accuracy: dict[int, float], rows: list[dict], complete: bool) -> None:
    result = {
        "command": "python experiments/pixel_value.py " + " ".join(_cli(args)),
        "args": asdict(args),
        "machine": f"{platform.processor() or platform.machine()}, {args.torch_threads} torch threads, {torch.__version__}",
        "device": "cpu",
        "agent_test_accuracy": {str(t): round(100 * a, 2) for t, a in own_accuracy.items()},
        "rows": rows,
        "complete": complete,
    }
    write_atomic(out, lambda handle: handle.write(json.dumps(result, indent=2).encode()))


def _cli(args: Args) -> list[str]:
    parts = [f"--agent {args.agent}", f"--out {args.out}"]
    defaults = Args(agent=args.agent, out=args.out)
    for name, value in asdict(args).items():
        if name not in ("agent", "out") and value != getattr(defaults, name):
            shown = (
                " ".join(f"'{v}'" if " " in str(v) else str(v) for v in value) if isinstance(value, tuple) else value
            )
            parts.append(f"--{name.replace('_', '-')} {shown}")
    return parts


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
