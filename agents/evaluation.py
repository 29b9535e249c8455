"""Test accuracy after each glimpse, and the ``metrics.json`` every agent writes.

Reported accuracies use the ``nearest`` sampler: each glimpse reads one real pixel.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agents.cli import UserFileExistsError
from agents.output import lock_output
from agents.rollout import GlimpsePolicy
from envs.atomic import write_atomic
from envs.data import load_mnist
from envs.perception import PerceptionCore
from envs.sampler import Sampler

#: Glimpse budgets reported in ``metrics.json`` (those ``<= T``, plus ``T`` itself).
REPORTED_BUDGETS = (1, 2, 5, 10, 25)
#: Glimpse budgets of the accuracy curves along training (``metrics.json`` ``curve``).
CURVE_BUDGETS = ("5", "10", "25")


def curve_milestones(limit: int = 10**7) -> list[int]:
    """The optimizer steps at which a training script records its accuracy curve, log-spaced:
    ``[1, 2, 5, 10, 20, 50, ...]`` up to ``limit``."""
    return [m * 10**k for k in range(len(str(limit))) for m in (1, 2, 5) if m * 10**k <= limit]


def curve_point(step: int, seconds: float, accuracy: torch.Tensor) -> dict[str, Any]:
    """One point of an accuracy curve: ``{"step", "seconds", "accuracy": {"5": .., "10": .., "25": ..}}``
    (the :data:`CURVE_BUDGETS` up to ``T``) from an accuracy after each glimpse ``(T,)``."""
    table = accuracy_table(accuracy)
    return {"step": step, "seconds": round(seconds, 1), "accuracy": {b: table[b] for b in CURVE_BUDGETS if b in table}}


@torch.no_grad()
def accuracy_by_glimpse(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    glimpses: int,
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
    correct = torch.zeros(glimpses, device=device)
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        images, labels = data.images[start:stop], data.labels[start:stop]
        correct += accuracy_on(policy, core, images, labels, glimpses, sampler) * labels.shape[0]
    return correct / size


@torch.no_grad()
def accuracy_on(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    glimpses: int,
    sampler: Sampler | str | None = None,
) -> torch.Tensor:
    """Fraction of one batch classified correctly after each glimpse: a ``(T,)`` tensor (:func:`play`).

    :param images: ``uint8`` ``(B, 28, 28)`` grey levels.
    :param labels: ``(B,)`` true classes.
    :param sampler: the read-out; default ``nearest`` (one real pixel per glimpse).
    """
    correct, _, _ = play(policy, core, images, labels, glimpses, sampler)
    return correct.float().mean(dim=1)


@torch.no_grad()
def agent_glimpses(
    policy: GlimpsePolicy, core: PerceptionCore, glimpses: int, images: torch.Tensor, batch_size: int = 2500
) -> tuple[torch.Tensor, torch.Tensor]:
    """The glimpses an agent (``policy`` reading with ``core``) takes on ``images`` (``uint8``
    ``(N, 28, 28)``) with the ``nearest`` read-out, through the environment (:func:`play`):
    ``coords`` ``(N, T, 2)`` pixel units, ``values`` ``(N, T)``."""
    coords, values = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        labels = torch.zeros(len(batch), dtype=torch.long, device=batch.device)  # unused: only the glimpses count
        _, coords_b, values_b = play(policy, core, batch, labels, glimpses)
        coords.append(coords_b)
        values.append(values_b)
    return torch.cat(coords), torch.cat(values)


@torch.no_grad()
def play(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    glimpses: int,
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
        glimpses,
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
    for step in range(glimpses):
        action = policy.choose(observation, step) if pixel else policy(observation, step)
        observation, _, _, _, info = env.step(action)  # next_step autoreset: the last step ends, no reset yet
        correct.append(env.sim.state.logits.argmax(dim=-1) == labels)
        coords.append(info["glimpse"])
        values.append(info["value"])
    return torch.stack(correct), torch.stack(coords, dim=1), torch.stack(values, dim=1)


def accuracy_table(accuracy: torch.Tensor) -> dict[str, float]:
    """``{"1": acc, "2": acc, ...}`` for the reported budgets up to ``T`` and for ``T``."""
    glimpses = accuracy.shape[0]
    budgets = sorted({b for b in REPORTED_BUDGETS if b <= glimpses} | {glimpses})
    return {str(b): round(float(accuracy[b - 1]), 4) for b in budgets}


def write_metrics(
    path: str | os.PathLike,
    agent: str,
    accuracy: torch.Tensor,
    train_sampler: str,
    train_seconds: float,
    device: str,
    seed: int,
    **extra: Any,
) -> dict[str, Any]:
    """Write the shared ``metrics.json`` schema and return it.

    ``{"agent", "test_accuracy": {"1": .., "2": .., "5": .., "10": .., "25": .., "T": ..},
    "readout": "nearest", "train_sampler", "train_seconds", "device", "seed", **extra}``
    """
    metrics = {
        "agent": agent,
        "test_accuracy": accuracy_table(accuracy),
        "readout": "nearest",
        "train_sampler": train_sampler,
        "train_seconds": round(train_seconds, 1),
        "device": device,
        "seed": seed,
        **extra,
    }
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"  # NaN is not JSON: refuse it here
    write_atomic(path, lambda handle: handle.write(text.encode()))
    return metrics


def log_folder(out: str | os.PathLike) -> Path:
    """A TensorBoard folder of this run's own, ``OUT/tb/<start time>-<pid>``: a rerun or a killed run
    in the same ``OUT`` never mixes its curves with this one's."""
    return Path(out) / "tb" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def accuracy_lines(title: str, table: dict[str, float]) -> list[str]:
    """``title``, then a table of test accuracy (%) by glimpses: what the scripts print.

    :param title: the first line (the agent and how it was evaluated).
    :param table: ``{"1": accuracy, "2": ..., "25": ...}`` (:func:`accuracy_table`), accuracies in ``[0, 1]``.
    """
    width = max(6, *(len(b) + 1 for b in table))
    return [
        title,
        "  glimpses " + "".join(f"{b:>{width}}" for b in table),
        "  accuracy " + "".join(f"{100 * v:>{width}.1f}" for v in table.values()),
    ]


def summary(metrics: dict[str, Any], out: str | os.PathLike, files: Sequence[str]) -> str:
    """What a training script ends with: its test accuracy by glimpses as a small table, and where its
    files went."""
    title = f"{metrics['agent']}, seed {metrics['seed']}: test accuracy (%), 10,000 test images, nearest read-out"
    lines = accuracy_lines(title, metrics["test_accuracy"])
    return "\n".join([*lines, f"wrote {', '.join(str(Path(out) / name) for name in files)}"])


def claim_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """The output folder of a run, created and owned by this process (:func:`agents.output.lock_output`:
    a second live run into it is refused). A folder that holds a finished run (``metrics.json``) is
    refused unless ``overwrite``; then its ``metrics.json`` goes first, so that a run that fails
    leaves no finished-looking mix of old and new files. Call it before any work.

    :raises UserError: ``out`` is a file, cannot be written, is owned by another run, or holds a
        finished run and ``overwrite`` is not set.
    """
    out = Path(out)
    metrics = out / "metrics.json"
    for owned in (False, True):  # refused before anything changes, and again once the folder is ours
        if metrics.is_file() and not overwrite:
            raise UserFileExistsError(
                f"{out} holds a finished run ({metrics}); pass --overwrite to replace it "
                "(make train ARGS=--overwrite), or another --out."
            )
        if not owned:
            lock_output(out)
    metrics.unlink(missing_ok=True)
    return out
