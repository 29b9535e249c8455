"""``MnistGlimpse-v0`` batched: thousands of episodes in lockstep as torch tensors, CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .config import PerceptionArg, action_space, build_simulator, observation_space, resolve_device
from .glimpse_env import parse_image_options
from .sampler import Sampler
from .simulator import INDEX_BLOCK, IndexStreams, check_actions, check_pixel_actions

ARRAY_TYPES = ("numpy", "torch")
AUTORESET_MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}


class MnistGlimpseVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~envs.glimpse_env.MnistGlimpseEnv` simulated as one batch.

    Spaces, rewards and episode semantics are those of the single environment; sub-environment
    ``k`` of a batch reset with ``seed=s`` sees the images of a single environment reset with
    ``seed=s + k``, so for equal actions the two produce equal observations, rewards and
    terminations (the tests check this). No Python loop runs over the batch during ``step``.

    Returns numpy arrays by default, as every Gymnasium vector environment does, so Gymnasium's vector
    wrappers (``NormalizeObservation``, ``RecordEpisodeStatistics``, ...) apply; ``array_type="torch"``
    returns torch tensors on ``device`` instead (no copies: for loops that stay on the GPU).
    ``infos`` follow Gymnasium's vector convention: each key holds a batch and ``"_key"`` a boolean
    mask of the sub-environments it is meaningful for (``label`` and ``correct`` at the last glimpse;
    elsewhere ``label`` is -1 and ``correct`` False: no label leaks to a consumer that ignores the masks).

    **Autoreset** (``metadata["autoreset_mode"]``): ``"next_step"`` (Gymnasium's default) resets a
    finished sub-environment on the following ``step``, which ignores that sub-environment's action
    and returns its first observation with reward 0. ``"same_step"`` resets it within the step that
    ends it: the returned observation is the new episode's first, and the last one is in
    ``infos["final_obs"]`` (a batch, valid where ``infos["_final_obs"]``).

    ``reset(options=...)`` takes, per sub-environment, ``index`` (``(N,)`` ints),
    or ``image`` (``(N, 28, 28)`` ``uint8``) and ``label`` (``(N,)``), and ``reset_mask`` (``(N,)``
    bool: reset only those).

    :param num_envs: batch size ``N``.
    :param max_glimpses: episode length ``T``.
    :param split: ``"train"`` or ``"test"``.
    :param sampler: ``"nearest"``, ``"bilinear"``, ``"bicubic"``, ``"gaussian"`` or a ``Sampler``.
    :param reward: ``"dense"`` or ``"final"``.
    :param perception: ``None`` (packaged core), a checkpoint path, or a ``PerceptionCore`` (shared).
    :param learn_perception: train the core after each batch of finished episodes (perception optimizer).
    :param perception_lr: that optimizer's learning rate.
    :param device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    :param autoreset_mode: ``"next_step"`` or ``"same_step"``.
    :param array_type: ``"numpy"`` or ``"torch"``: what ``reset`` and ``step`` return.
    :param obs_type: ``"summary"`` or ``"record"`` (a ``Dict`` batched per key), as the single env.
    :param action_type: ``"continuous"`` (``(N, 2)`` floats) or ``"pixel"`` (``(N,)`` integers in
        ``[0, 784)``, with :meth:`action_masks`).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1024,
        max_glimpses: int = 25,
        split: str = "train",
        sampler: str | Sampler = "bilinear",
        reward: str = "dense",
        perception: PerceptionArg = None,
        learn_perception: bool = False,
        perception_lr: float = 1e-3,
        device: torch.device | str = "auto",
        autoreset_mode: str | AutoresetMode = "next_step",
        array_type: str = "numpy",
        render_mode: str | None = None,
        obs_type: str = "summary",
        action_type: str = "continuous",
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}.")
        autoreset_mode = AUTORESET_MODES.get(autoreset_mode, autoreset_mode)
        if autoreset_mode not in AUTORESET_MODES.values():
            raise ValueError(
                f"Unknown autoreset_mode {autoreset_mode!r}; valid values are {list(AUTORESET_MODES)} "
                "(or gymnasium.vector.AutoresetMode.NEXT_STEP / SAME_STEP)."
            )
        if array_type not in ARRAY_TYPES:
            raise ValueError(f"Unknown array_type {array_type!r}; valid values are {list(ARRAY_TYPES)}.")
        if render_mode is not None:
            raise ValueError(
                "MnistGlimpseVectorEnv does not render; render single episodes with "
                "gymnasium.make('MnistGlimpse-v0', render_mode='rgb_array')."
            )
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.num_envs = int(num_envs)
        self.device = resolve_device(device)
        self.array_type = array_type
        self.render_mode = None
        self.sim = build_simulator(
            self.num_envs,
            max_glimpses,
            split,
            sampler,
            reward,
            perception,
            learn_perception,
            perception_lr,
            self.device,
            obs_type,
            action_type,
        )
        self.max_glimpses = self.sim.max_glimpses
        self.obs_type, self.action_type = obs_type, action_type
        self.single_action_space = action_space(action_type)
        self.single_observation_space = observation_space(self.sim.core, self.max_glimpses, obs_type)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._streams: IndexStreams | None = None
        self._needs_reset = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._false = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    @property
    def core(self):
        """The perception core this environment runs."""
        return self.sim.core

    def _seed(self, seed: int | list[int] | None, mask: np.ndarray | None = None) -> None:
        """One generator per sub-environment, seeded ``seed + k`` (or from ``seed[k]``) as
        ``SyncVectorEnv`` seeds its copies. A stated Python pass over ``N``, at seeding only.
        With a ``reset_mask``, only those sub-environments are reseeded (as ``SyncVectorEnv`` does);
        the others keep their image streams."""
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer, list, tuple, np.ndarray)):
            raise ValueError(f"seed must be an int or a list of {self.num_envs} ints, got {seed!r}.")
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + k for k in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"Got {len(seeds)} seeds for {self.num_envs} sub-environments.")
        if mask is not None and self._streams is not None:
            for k in np.flatnonzero(mask):
                self._streams.generators[k] = seeding.np_random(seeds[k])[0]
                self._streams.cursor[k] = INDEX_BLOCK  # draw a fresh block from the new generator
            self._np_random = self._streams.generators[0]
            return
        generators = [seeding.np_random(s)[0] for s in seeds]
        self._np_random = generators[0]
        self._streams = IndexStreams(generators, len(self.sim.data))

    def state_dict(self) -> dict:
        """Everything that decides what this environment does next: the episodes in progress, each
        sub-environment's image stream, and the core and its optimizer when it learns. A training run
        saves it to stop and later continue exactly (``load_state_dict`` on an environment built with the
        same arguments)."""
        if self._streams is None:
            raise RuntimeError("Call reset() before state_dict(): the environment has no episodes yet.")
        return {
            "sim": self.sim.state_dict(),
            "streams": self._streams.state_dict(),
            "needs_reset": self._needs_reset.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output; a mismatch is refused before anything changes."""
        saved_rows = state["needs_reset"].shape[0]
        if saved_rows != self.num_envs:
            raise ValueError(f"The saved environment has {saved_rows} sub-environments, this one {self.num_envs}.")
        self.sim.load_state_dict(state["sim"])
        if self._streams is None:
            self._seed(0)  # placeholders: their states are replaced next
        self._streams.load_state_dict(state["streams"])
        self._np_random = self._streams.generators[0]
        self._needs_reset = state["needs_reset"].to(self.device).clone()

    def _reset_rows(self, rows: torch.Tensor, parsed: dict[str, np.ndarray] | None = None) -> None:
        parsed = parsed or {}
        rows_np = rows.cpu().numpy()
        if "image" in parsed:
            images = torch.as_tensor(parsed["image"][rows_np], device=self.device)
            labels = torch.as_tensor(parsed["label"][rows_np], device=self.device)
            self.sim.reset(rows, images=images, labels=labels)
        else:
            if "index" in parsed:
                indices = parsed["index"][rows_np]
            else:
                indices = self._streams.next(np.flatnonzero(rows_np))
            self.sim.reset(rows, indices=torch.as_tensor(indices, device=self.device))
        self._needs_reset[rows] = False

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        parsed = parse_image_options(options, (self.num_envs,))
        mask = parsed.get("reset_mask")
        if self._streams is None and mask is not None and not mask.all():
            raise ValueError("The first reset starts every sub-environment: pass no reset_mask (or an all-True one).")
        if "index" in parsed:  # checked before anything changes: a refused reset leaves the episodes as they were
            chosen = parsed["index"] if mask is None else parsed["index"][mask]
            if ((chosen < 0) | (chosen >= len(self.sim.data))).any():
                raise ValueError(f"reset option 'index' must be in [0, {len(self.sim.data)}), got {parsed['index']}.")
        if seed is not None or self._streams is None:
            self._seed(seed, mask)
        rows = torch.ones_like(self._needs_reset) if mask is None else torch.as_tensor(mask, device=self.device)
        self._reset_rows(rows, parsed)
        return self._out(self._observation()), self._out({"index": self.sim.indices.clone(), "_index": rows})

    def _observation(self) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.sim.observation() if self.obs_type == "summary" else self.sim.record_observation()

    def action_masks(self) -> Any:
        """``(N, 784)`` bool: ``True`` at the pixels each episode has not read (``action_type="pixel"``;
        the convention of sb3-contrib's ``MaskablePPO``)."""
        if self.action_type != "pixel":
            raise ValueError('action_masks() is for action_type="pixel" (Discrete(784) actions).')
        return self._out(~self.sim.read.flatten(1))

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._streams is None:
            raise RuntimeError("Call reset() before step().")
        actions = torch.as_tensor(actions, device=self.device)
        if self.action_type == "pixel":
            if actions.is_floating_point() or actions.dtype == torch.bool:
                raise ValueError(f"Pixel actions are integers i * 28 + j in [0, 784), got dtype {actions.dtype}.")
            check_pixel_actions(actions, self.num_envs)  # also on the autoreset step, which ignores them
        else:
            if actions.is_floating_point() and actions.dtype != torch.float32:  # finite values past float32's range
                actions = torch.where(actions.isfinite(), actions.clamp(-2.0, 2.0), actions)  # clip, not to inf
            actions = actions.to(torch.float32)
            check_actions(actions, self.num_envs)  # also on the autoreset step, which ignores them
        autoreset = self.metadata["autoreset_mode"]
        pending = self._needs_reset
        stepped = ~pending  # the rows that took a glimpse this step
        if autoreset == AutoresetMode.NEXT_STEP and bool(pending.any()):
            if bool(pending.all()):  # the usual case: every episode ended together
                self._reset_rows(pending)
                observation = self._observation()
                return self._out((observation, self._false.float(), self._false.clone(), self._false.clone(), {}))
            result = self.sim.step(actions, active=~pending)
            self._reset_rows(pending)
            observation = self._observation()
        else:
            result = self.sim.step(actions)
            observation = result.observation if self.obs_type == "summary" else self._observation()
            stepped = torch.ones_like(pending)
        terminated = result.terminated
        info: dict[str, Any] = {
            "glimpse": result.info["glimpse"],
            "_glimpse": stepped,
            "value": result.info["value"],
            "_value": stepped,
            "prediction": result.info["prediction"],
            "_prediction": stepped,
            # -1 and False until an episode ends: a consumer that ignores the masks never sees a label early
            "label": torch.where(terminated, result.info["label"], -1),
            "_label": terminated,
            "correct": result.info["correct"] & terminated,
            "_correct": terminated,
        }
        if autoreset == AutoresetMode.SAME_STEP and bool(terminated.any()):
            info["final_obs"], info["_final_obs"] = observation, terminated
            self._reset_rows(terminated)
            observation = self._observation()
        else:
            self._needs_reset = terminated.clone()
        return self._out((observation, result.reward, terminated, self._false.clone(), info))

    def _out(self, value: Any) -> Any:
        """Convert (nested) tensors to numpy when ``array_type="numpy"``."""
        if self.array_type == "torch":
            return value
        if isinstance(value, torch.Tensor):
            return value.cpu().numpy()
        if isinstance(value, dict):
            return {key: self._out(item) for key, item in value.items()}
        return tuple(self._out(item) for item in value)
