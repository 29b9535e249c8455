"""Checks and set-up shared by :class:`~envs.glimpse_env.MnistGlimpseEnv` and
:class:`~envs.vector_env.MnistGlimpseVectorEnv`: one place that turns constructor arguments into a
ready :class:`~envs.simulator.GlimpseSimulator`, with actionable errors for bad values."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from .data import IMAGE_SIZE, NUM_CLASSES, SPLITS, load_mnist
from .episode import REWARD_MODES
from .perception import PerceptionCore, load_pretrained, non_finite
from .sampler import SAMPLER_MODES, Sampler
from .simulator import GlimpseSimulator

PerceptionArg = PerceptionCore | str | os.PathLike | None
OBS_TYPES = ("summary", "record")
ACTION_TYPES = ("continuous", "pixel")


def resolve_device(device: torch.device | str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device`` (checked).

    ``"cuda"`` resolves to the current CUDA device with its index (``cuda:0``), the device that tensors
    and modules moved with ``.to("cuda")`` report, so the two compare equal.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'.")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def _choose(name: str, value: Any, valid: tuple) -> Any:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid values are {list(valid)}.")
    return value


def resolve_perception(perception: PerceptionArg, device: torch.device, learn_perception: bool) -> PerceptionCore:
    """The core an environment runs: the packaged one (``None``), a checkpoint path, or a
    :class:`PerceptionCore` instance used as is (shared with whoever passed it, never copied).

    The packaged core is one process-wide instance (read once) unless the environment will train it
    (``learn_perception=True``): then it gets a private copy, so the shared weights stay untouched. A core with a NaN
    or inf weight is refused, as a checkpoint file with one is.
    """
    if perception is None:
        return load_pretrained(device, shared=not learn_perception)
    if isinstance(perception, PerceptionCore):
        core_device = next(perception.parameters()).device
        if core_device != device:
            raise ValueError(
                f"The perception core is on {core_device} but the environment on {device}; move it with "
                f"core.to({str(device)!r}) or pass device={str(core_device)!r}."
            )
        broken = non_finite(perception.state_dict())
        if broken:
            raise ValueError(
                f"The perception core passed holds non-finite (NaN or inf) weights in {broken[:5]} ({len(broken)} "
                "tensors): its training diverged or it was damaged. Pass a core with finite weights (one from before "
                "the divergence, or perception=None for the packaged core)."
            )
        return perception
    if isinstance(perception, (str, os.PathLike)):
        return PerceptionCore.load(perception, device)
    raise TypeError(
        f"perception must be None (packaged core), a checkpoint path or a PerceptionCore, got "
        f"{type(perception).__name__}."
    )


def build_simulator(
    num_envs: int,
    max_glimpses: int,
    split: str,
    sampler: str | Sampler,
    reward: str,
    perception: PerceptionArg,
    learn_perception: bool,
    learning_rate: float,
    device: torch.device,
    obs_type: str = "summary",
    action_type: str = "continuous",
) -> GlimpseSimulator:
    """Validate the environment arguments and build the simulator they describe (it keeps the record of
    the cells read when the observation or the action masks need it)."""
    _choose("obs_type", obs_type, OBS_TYPES)
    _choose("action_type", action_type, ACTION_TYPES)
    if (
        isinstance(max_glimpses, bool)
        or not isinstance(max_glimpses, (int, np.integer))
        or not 1 <= max_glimpses <= 784
    ):
        raise ValueError(f"max_glimpses must be an integer in 1..784 (an image has 784 pixels), got {max_glimpses!r}.")
    _choose("split", split, SPLITS)
    _choose("reward", reward, REWARD_MODES)
    if not isinstance(sampler, Sampler):
        sampler = Sampler(_choose("sampler", sampler, SAMPLER_MODES))
    if not isinstance(learn_perception, bool):
        raise ValueError(f"learn_perception must be True or False, got {learn_perception!r}.")
    core = resolve_perception(perception, device, learn_perception)
    optimizer = torch.optim.Adam(core.parameters(), lr=learning_rate) if learn_perception else None
    keep_reads = obs_type == "record" or action_type == "pixel"
    data = load_mnist(split, device)
    return GlimpseSimulator(data, core, sampler, num_envs, int(max_glimpses), reward, optimizer, keep_reads=keep_reads)


def observation_space(core: PerceptionCore, max_glimpses: int, obs_type: str = "summary") -> spaces.Space:
    """``"summary"``: ``Box`` of ``concat(histogram, prediction)``, histogram entries in ``[0, T]`` and
    probabilities in ``[0, 1]``. ``"record"``: ``Dict`` of that ``summary``, ``mask`` and ``pixels``
    (``Box(0, 1, (784,))`` each, pixel ``i * 28 + j`` at index ``i * 28 + j``) and ``step``
    (``Box(0, T, (1,))``)."""
    low = np.zeros(core.observation_size, dtype=np.float32)
    high = np.concatenate(
        [np.full(core.histogram_size, max_glimpses, dtype=np.float32), np.ones(NUM_CLASSES, dtype=np.float32)]
    )
    summary = short_repr(spaces.Box(low, high, dtype=np.float32))
    if obs_type == "summary":
        return summary
    grid = (IMAGE_SIZE * IMAGE_SIZE,)  # flat, in the order of the pixel actions: i * 28 + j
    return spaces.Dict(
        {
            "summary": summary,
            "mask": spaces.Box(0.0, 1.0, grid, dtype=np.float32),
            "pixels": spaces.Box(0.0, 1.0, grid, dtype=np.float32),
            "step": spaces.Box(0.0, float(max_glimpses), (1,), dtype=np.float32),
        }
    )


def _runs(bound: np.ndarray) -> str:
    """A flat bound as its runs of equal values, e.g. ``[25.0 x 512, 1.0 x 10]``."""
    starts = np.flatnonzero(np.concatenate([[True], bound[1:] != bound[:-1]]))
    counts = np.diff(np.append(starts, bound.size))
    return "[" + ", ".join(f"{bound[start]} x {count}" for start, count in zip(starts, counts)) + "]"


def short_repr(box: spaces.Box, max_runs: int = 4) -> spaces.Box:
    """``box`` itself, printing a bound made of a few runs of equal values as those runs:
    ``Box(0.0, [25.0 x 512, 1.0 x 10], (522,), float32)`` where Gymnasium would print all 522 values.
    The bounds are unchanged (Gymnasium's ``Box`` reads its printed form from ``low_repr`` and
    ``high_repr``); a uniform bound prints as one value, as Gymnasium prints it.

    :param box: a one-dimensional ``Box``.
    :param max_runs: a bound of more runs than this prints in full.
    :return: ``box``.
    """
    for name in ("low", "high"):
        bound = getattr(box, name)
        if bound.ndim == 1 and bound.size and np.count_nonzero(bound[1:] != bound[:-1]) in range(1, max_runs):
            setattr(box, f"{name}_repr", _runs(bound))
    return box


def action_space(action_type: str = "continuous") -> spaces.Space:
    """``"continuous"``: ``Box(-1, 1, (2,), float32)``, normalised ``(i, j)``. ``"pixel"``:
    ``Discrete(784)``, pixel ``i * 28 + j`` read at its centre."""
    if action_type == "pixel":
        return spaces.Discrete(IMAGE_SIZE * IMAGE_SIZE)
    return spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
