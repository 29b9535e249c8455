"""The batched glimpse simulation behind both environments.

:class:`GlimpseSimulator` keeps ``N`` episodes as torch tensors on one device and advances them
together; :class:`~envs.glimpse_env.MnistGlimpseEnv` is the case ``N = 1`` and
:class:`~envs.vector_env.MnistGlimpseVectorEnv` the general one, so the two cannot drift apart.
The observation is computed only from the glimpses actually taken (coordinates and sampled values);
the label is used for the reward and the terminal ``info`` alone.

Image choice is the environments' only randomness. Episode ``e`` of environment ``k`` takes image
``stream_k[e]``, where ``stream_k`` is drawn from that environment's own ``numpy`` generator in blocks
of :data:`INDEX_BLOCK` (:class:`IndexStreams`). A batched environment seeded with ``s`` therefore
shows exactly the images of ``N`` single environments seeded with ``s, s + 1, ..., s + N - 1``
(Gymnasium's ``SyncVectorEnv`` convention), while touching the generators in Python only once per
:data:`INDEX_BLOCK` episodes, never per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import IMAGE_SIZE, MnistSplit
from .episode import EpisodeState, initial_state, reset
from .episode import step as episode_step
from .perception import PerceptionCore, perception_loss
from .sampler import Sampler

#: Image indices drawn per generator call (a stated trade-off: memory ``N * INDEX_BLOCK * 8`` bytes
#: against one Python pass over the ``N`` generators every ``INDEX_BLOCK`` episodes).
INDEX_BLOCK = 64


class IndexStreams:
    """One stream of image indices per environment, each from its own ``numpy`` generator.

    :param generators: one ``np.random.Generator`` per environment.
    :param dataset_size: indices are drawn uniformly from ``range(dataset_size)``.
    """

    def __init__(self, generators: list[np.random.Generator], dataset_size: int) -> None:
        self.generators = generators
        self.dataset_size = dataset_size
        self.block = np.empty((len(generators), INDEX_BLOCK), dtype=np.int64)
        self.cursor = np.full(len(generators), INDEX_BLOCK, dtype=np.int64)

    def next(self, rows: np.ndarray) -> np.ndarray:
        """The next index of each environment in ``rows`` (an integer array), advancing its stream."""
        exhausted = rows[self.cursor[rows] >= INDEX_BLOCK]
        for row in exhausted:  # once per INDEX_BLOCK episodes per environment
            self.block[row] = self.generators[row].integers(self.dataset_size, size=INDEX_BLOCK)
            self.cursor[row] = 0
        indices = self.block[rows, self.cursor[rows]]
        self.cursor[rows] += 1
        return indices

    def state_dict(self) -> dict:
        """Each generator's state and the drawn, unused indices: what the streams yield next."""
        return {
            "generators": [g.bit_generator.state for g in self.generators],
            "block": torch.from_numpy(self.block.copy()),
            "cursor": torch.from_numpy(self.cursor.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the streams saved by :meth:`state_dict` (same number of environments)."""
        if len(state["generators"]) != len(self.generators) or tuple(state["block"].shape) != self.block.shape:
            raise ValueError(
                f"The saved index streams are for {len(state['generators'])} environments, not {len(self.generators)}."
            )
        for generator, saved in zip(self.generators, state["generators"]):
            generator.bit_generator.state = saved
        self.block = state["block"].numpy().astype(np.int64, copy=True)
        self.cursor = state["cursor"].numpy().astype(np.int64, copy=True)


@dataclass
class StepResult:
    """What :meth:`GlimpseSimulator.step` returns, as tensors on the simulator's device.

    :param observation: ``(N, H + 10)`` float32.
    :param reward: ``(N,)`` float32.
    :param terminated: ``(N,)`` bool, true after the last glimpse.
    :param info: ``glimpse`` ``(N, 2)`` pixel coordinates, ``value`` ``(N,)``, ``prediction``
        ``(N, 10)``, ``label`` ``(N,)`` and ``correct`` ``(N,)`` (meaningful where ``terminated``).
    """

    observation: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    info: dict[str, torch.Tensor]


#: The keys of every ``info``, of both environments, at ``reset`` and at every ``step``:
#: ``index`` (int64), ``glimpse`` (float32 ``(2,)``), ``value`` (float32), ``prediction`` (float32
#: ``(10,)``), ``label`` (int64) and ``correct`` (bool). Where a key means nothing yet (no glimpse before
#: the first step; no label or outcome before the episode ends) it holds :data:`PLACEHOLDER` (``False``
#: for ``correct``): never the true label before the end.
INFO_KEYS = ("index", "glimpse", "value", "prediction", "label", "correct")
PLACEHOLDER = -1

#: How many offending rows an error message names (with the count of all of them), so that a message
#: stays short at any batch size.
ROWS_SHOWN = 5

#: What a non-finite continuous action most likely means, and the valid values.
NON_FINITE_HINT = (
    "the policy produced NaN or inf (a diverged policy?); glimpse coordinates must be finite numbers in "
    "[-1, 1] (values outside are clipped)"
)

_UNSIGNED = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)


def dtype_kind(actions: torch.Tensor | np.ndarray) -> str:
    """The numpy kind of an array's or a tensor's dtype: ``"b"`` bool, ``"i"`` / ``"u"`` signed / unsigned
    integer, ``"f"`` float, ``"c"`` complex; strings and objects (numpy only) keep their own kinds."""
    if not isinstance(actions, torch.Tensor):
        return actions.dtype.kind
    if actions.dtype == torch.bool:
        return "b"
    if actions.dtype.is_complex:
        return "c"
    if actions.dtype.is_floating_point:
        return "f"
    return "u" if actions.dtype in _UNSIGNED else "i"


def describe_rows(bad: torch.Tensor | np.ndarray, values: torch.Tensor | np.ndarray | None = None) -> str:
    """``"k of N rows (row r: value; ...)"``: how many rows ``bad`` (bool ``(N,)``) marks, and the first
    :data:`ROWS_SHOWN` of them with their ``values`` (``"k of N rows (r, ...)"`` without ``values``)."""
    if isinstance(bad, torch.Tensor):
        count, rows = int(bad.sum()), torch.nonzero(bad).flatten()[:ROWS_SHOWN].tolist()
    else:
        count, rows = int(np.count_nonzero(bad)), np.flatnonzero(bad)[:ROWS_SHOWN].tolist()
    if values is None:
        shown = ", ".join(str(row) for row in rows)
    else:
        items = (values[row].tolist() if hasattr(values[row], "tolist") else values[row] for row in rows)
        shown = "; ".join(f"row {row}: {item!r}" for row, item in zip(rows, items))
    more = f"; and {count - len(rows)} more" if count > len(rows) else ""
    return f"{count} of {len(bad)} rows ({shown}{more})"


def _check_shape(shape: tuple[int, ...], num_envs: int) -> None:
    if tuple(shape) != (num_envs, 2):
        raise ValueError(
            f"Expected actions of shape ({num_envs}, 2) (one (i, j) pair in [-1, 1] per environment), "
            f"got shape {tuple(shape)}."
        )


def check_actions(actions: torch.Tensor, num_envs: int) -> None:
    """Raise ``ValueError`` unless ``actions`` has shape ``(num_envs, 2)`` and only finite entries."""
    _check_shape(actions.shape, num_envs)
    finite = torch.isfinite(actions).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(f"Actions contain NaN or inf in {describe_rows(~finite, actions)}: {NON_FINITE_HINT}.")


def check_pixel_actions(actions: torch.Tensor | np.ndarray, num_envs: int) -> None:
    """Pixel actions must be ``(N,)`` integers in ``[0, 784)`` (any integer dtype, checked before any
    conversion: an unsigned or out-of-range value is never wrapped into range)."""
    if tuple(actions.shape) != (num_envs,):
        raise ValueError(
            f"Expected pixel actions of shape ({num_envs},) (one index i * 28 + j per environment), "
            f"got shape {tuple(actions.shape)}."
        )
    if dtype_kind(actions) not in "iu":
        raise ValueError(
            f"Pixel actions are integers i * 28 + j in [0, 784), got dtype {actions.dtype}; pass an integer "
            "array (e.g. numpy int64)."
        )
    if isinstance(actions, torch.Tensor) and actions.dtype in _UNSIGNED:
        actions = actions.cpu().numpy()  # torch compares few unsigned dtypes; numpy compares them all
    bad = (actions < 0) | (actions >= IMAGE_SIZE * IMAGE_SIZE)
    if bool(bad.any()):
        raise ValueError(f"Pixel actions must be integers in [0, 784); out of range in {describe_rows(bad, actions)}.")


def as_actions(actions: Any, action_type: str, num_envs: int, device: torch.device) -> torch.Tensor:
    """Check a batch of actions, then convert it for :meth:`GlimpseSimulator.step`: ``float32 (N, 2)``
    glimpse coordinates or ``int64 (N,)`` pixel indices on ``device``.

    Nothing is converted before it is checked: bool, complex, string and object actions are refused (so
    are floats as pixel actions), and so are values out of range or non-finite, with the first few
    offending rows and their count. Finite floats past float32's range are clipped, not overflowed to inf.

    :param actions: a tensor, an array or a nested sequence.
    :param action_type: ``"continuous"`` or ``"pixel"``.
    :param num_envs: the batch size ``N``.
    :param device: where the returned tensor lives.
    :raises ValueError: naming the problem and the valid values.
    """
    if not isinstance(actions, torch.Tensor):
        try:
            actions = np.asarray(actions)
        except ValueError as error:  # a ragged nested sequence
            raise ValueError(f"Actions must be one array of {num_envs} rows: {error}") from None
    kind = dtype_kind(actions)
    if action_type == "pixel":
        check_pixel_actions(actions, num_envs)
        if isinstance(actions, np.ndarray):
            actions = actions.astype(np.int64)
        return torch.as_tensor(actions, device=device).to(torch.int64)
    if kind not in "fiu":
        raise ValueError(
            f"Actions are glimpse coordinates, real numbers in [-1, 1], got dtype {actions.dtype}; pass a float "
            "array (e.g. numpy float32)."
        )
    _check_shape(actions.shape, num_envs)
    if isinstance(actions, np.ndarray):
        if kind == "f" and actions.dtype != np.float32:  # finite values past float32's range: clip, not to inf
            actions = np.where(np.isfinite(actions), np.clip(actions, -2.0, 2.0), actions)
        actions = torch.as_tensor(actions.astype(np.float32), device=device)
    else:
        if actions.is_floating_point() and actions.dtype != torch.float32:
            actions = torch.where(actions.isfinite(), actions.clamp(-2.0, 2.0), actions)
        actions = actions.to(device, torch.float32)
    check_actions(actions, num_envs)
    return actions


class GlimpseSimulator:
    """``N`` glimpse episodes advanced in lockstep on one device: the streams' images, the labels and
    an :class:`~envs.episode.EpisodeState`, advanced by :func:`envs.episode.step` under ``no_grad``.

    :param data: the split to draw images from (already on ``device``).
    :param core: the perception core (on ``device``); used under ``no_grad`` except for learning.
    :param sampler: how a glimpse reads the image.
    :param num_envs: ``N``.
    :param max_glimpses: episode length ``T``.
    :param reward: ``"dense"`` (log-likelihood gain of the true class per glimpse) or ``"final"``.
    :param optimizer: if given, the core is trained with cross-entropy on the true label from each
        batch of episodes that ends (the perception optimizer).
    :param keep_reads: keep the reads (the cells read and their grey levels, ``N * 784`` each), for the
        ``"record"`` observation.
    """

    def __init__(
        self,
        data: MnistSplit,
        core: PerceptionCore,
        sampler: Sampler,
        num_envs: int,
        max_glimpses: int,
        reward: str,
        optimizer: torch.optim.Optimizer | None = None,
        keep_reads: bool = False,
    ) -> None:
        self.data = data
        self.core = core
        self.sampler = sampler
        self.num_envs = num_envs
        self.max_glimpses = max_glimpses
        self.reward_mode = reward
        self.optimizer = optimizer
        self.device = data.images.device
        n = num_envs
        self.images = torch.zeros(n, IMAGE_SIZE, IMAGE_SIZE, device=self.device)
        self.labels = torch.zeros(n, dtype=torch.long, device=self.device)
        self.indices = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self.keep_reads = keep_reads
        self.state = initial_state(core, n, max_glimpses, self.device, keep_reads=keep_reads)

    #: The per-episode tensors besides :attr:`state`'s: with the state and the core (and its
    #: optimizer) they are the whole simulation.
    EPISODE_STATE = ("images", "labels", "indices")

    # The episode state's tensors, as the environments and tests read them.
    @property
    def histogram(self) -> torch.Tensor:
        """``(N, H)`` the core's histograms."""
        return self.state.histogram

    @property
    def prediction(self) -> torch.Tensor:
        """``(N, 10)`` the current predictions, ``softmax(logits)``."""
        return self.state.prediction

    @property
    def elapsed(self) -> torch.Tensor:
        """``(N,)`` glimpses taken."""
        return self.state.elapsed

    @property
    def trail(self) -> torch.Tensor:
        """``(N, T, 2)`` the glimpse locations taken (pixel units)."""
        return self.state.trail

    @property
    def trail_values(self) -> torch.Tensor:
        """``(N, T)`` the values read there."""
        return self.state.trail_values

    @property
    def read(self) -> torch.Tensor:
        """``(N, 28, 28)`` bool, the cells read (``keep_reads`` only)."""
        return self.state.read.view(self.num_envs, IMAGE_SIZE, IMAGE_SIZE)

    @property
    def read_values(self) -> torch.Tensor:
        """``(N, 28, 28)`` the grey levels read there (``keep_reads`` only)."""
        return self.state.read_values.view(self.num_envs, IMAGE_SIZE, IMAGE_SIZE)

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every per-episode tensor by name: :data:`EPISODE_STATE` and the state's (its record if kept)."""
        tensors = {name: getattr(self, name) for name in self.EPISODE_STATE}
        for name in EpisodeState.__dataclass_fields__:
            if getattr(self.state, name) is not None:
                tensors[name] = getattr(self.state, name)
        return tensors

    def state_dict(self) -> dict:
        """The episodes in progress and, when the core learns, its weights and optimizer (a frozen core
        is the caller's and never changes here)."""
        state = {"episodes": {name: tensor.clone() for name, tensor in self._tensors().items()}}
        if self.optimizer is not None:
            state["core"] = self.core.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; every shape is checked before anything changes."""
        episodes, current = state["episodes"], self._tensors()
        if set(episodes) != set(current):
            raise ValueError(
                "The saved simulation and this one differ in obs_type/action_type (the record of reads), or it was "
                "saved by another version of the project."
            )
        for name, tensor in current.items():
            saved = episodes[name]
            if saved.shape != tensor.shape or saved.dtype != tensor.dtype:
                raise ValueError(
                    f"The saved simulation's {name} is {tuple(saved.shape)} {saved.dtype}, this one's "
                    f"{tuple(tensor.shape)} {tensor.dtype}: it was saved from an environment with other arguments."
                )
        if ("optimizer" in state) != (self.optimizer is not None):
            raise ValueError("The saved simulation and this one differ in learn_perception.")
        if self.optimizer is not None:
            self.core.load_state_dict(state["core"])
            self.optimizer.load_state_dict(state["optimizer"])
        restored = {name: episodes[name].to(self.device).clone() for name in current}
        for name in self.EPISODE_STATE:
            setattr(self, name, restored.pop(name))
        self.state = EpisodeState(**restored)

    def observation(self) -> torch.Tensor:
        """``concat(histogram, prediction)``, ``(N, H + 10)``."""
        return self.state.observation()

    def record_observation(self) -> dict[str, torch.Tensor]:
        """The ``"record"`` observation (:meth:`envs.episode.EpisodeState.record_observation`):
        ``summary`` ``(N, H + 10)``, ``mask`` ``(N, 784)``, ``pixels`` ``(N, 784)`` and ``step`` ``(N, 1)``."""
        return self.state.record_observation()

    def reset(
        self,
        rows: torch.Tensor,
        indices: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        """Start new episodes in ``rows`` (a bool mask ``(N,)``), on dataset images ``indices`` or on
        the given ``uint8`` ``images`` ``(R, 28, 28)`` with ``labels`` ``(R,)`` (``R`` = rows set)."""
        if images is None:
            images = self.data.images[indices]
            labels = self.data.labels[indices]
        else:
            indices = torch.full_like(labels, -1)
        self.images[rows] = images.to(self.images.dtype) / 255.0
        self.labels[rows] = labels
        self.indices[rows] = indices
        self.state = reset(self.state, rows)

    @torch.no_grad()
    def step(self, actions: torch.Tensor, active: torch.Tensor | None = None) -> StepResult:
        """Take one glimpse in every episode (:func:`envs.episode.step`); ``actions`` ``(N, 2)`` in
        ``[-1, 1]`` (clipped), or ``(N,)`` integer pixel indices ``i * 28 + j`` in ``[0, 784)`` (read at
        the pixel's centre).

        :param active: optional bool ``(N,)``: only these episodes advance; the others keep their
            state and report reward 0 and ``terminated=False``.
        :raises RuntimeError: if an active episode has already terminated.
        """
        if actions.dtype.is_floating_point:
            check_actions(actions, self.num_envs)
            actions = actions.to(self.device, torch.float32)
        else:
            check_pixel_actions(actions, self.num_envs)
            actions = actions.to(self.device, torch.long)
        ended = self.state.elapsed >= self.max_glimpses
        if bool((ended if active is None else active & ended).any()):
            raise RuntimeError("step() called on a terminated episode; call reset() first.")
        out = episode_step(
            self.state, actions, self.images, self.core, self.sampler, self.labels, self.reward_mode, active
        )
        self.state = out.state
        if self.optimizer is not None and bool(out.terminated.any()):
            self.learn(out.terminated)
        prediction = self.state.prediction
        info = {
            "glimpse": out.coords,
            "value": out.values,
            "prediction": prediction,
            "label": self.labels.clone(),
            "correct": out.correct,
        }
        observation = torch.cat([self.state.histogram, prediction], dim=-1)  # EpisodeState.observation
        return StepResult(observation, out.reward, out.terminated, info)

    def reset_info(self) -> dict[str, torch.Tensor]:
        """The :data:`INFO_KEYS` of episodes that just started: the image shown and the (uniform)
        prediction; no glimpse, value, label or outcome yet (:data:`PLACEHOLDER`)."""
        n = self.num_envs
        return {
            "index": self.indices.clone(),
            "glimpse": torch.full((n, 2), float(PLACEHOLDER), device=self.device),
            "value": torch.full((n,), float(PLACEHOLDER), device=self.device),
            "prediction": self.prediction.clone(),
            "label": torch.full((n,), PLACEHOLDER, dtype=torch.long, device=self.device),
            "correct": torch.zeros(n, dtype=torch.bool, device=self.device),
        }

    def step_info(self, result: StepResult, stepped: torch.Tensor, ended: torch.Tensor) -> dict[str, torch.Tensor]:
        """The :data:`INFO_KEYS` after :meth:`step`: the glimpse and value read where ``stepped`` (bool
        ``(N,)``), the label and ``correct`` where ``ended`` (:data:`PLACEHOLDER` and ``False`` elsewhere),
        and the image and prediction each episode now shows."""
        return {
            "index": self.indices.clone(),
            "glimpse": torch.where(stepped.unsqueeze(-1), result.info["glimpse"], float(PLACEHOLDER)),
            "value": torch.where(stepped, result.info["value"], float(PLACEHOLDER)),
            "prediction": self.prediction.clone(),
            "label": torch.where(ended, result.info["label"], PLACEHOLDER),
            "correct": result.info["correct"] & ended,
        }

    @torch.enable_grad()
    def learn(self, rows: torch.Tensor) -> float:
        """One perception-optimizer step on the finished episodes in ``rows`` (bool ``(N,)``).

        The core re-reads the stored glimpses (coordinates and values, no image access) with
        gradients on, and minimises the cross-entropy of the true label averaged over all glimpses.
        """
        loss = perception_loss(self.core.replay(self.trail[rows], self.trail_values[rows]), self.labels[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
