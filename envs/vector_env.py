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
from .simulator import INDEX_BLOCK, INFO_KEYS, IndexStreams, as_actions, describe_rows

ARRAY_TYPES = ("numpy", "torch")
AUTORESET_MODES = {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}


class MnistGlimpseVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~envs.glimpse_env.MnistGlimpseEnv` simulated as one batch.

    Spaces, rewards and episode semantics are those of the single environment; sub-environment
    ``k`` of a batch reset with ``seed=s`` sees the images of a single environment reset with
    ``seed=s + k``, so for equal actions the two produce equal observations, rewards and
    terminations (the tests check this). No Python loop runs over the batch during ``step``.

    Returns numpy arrays by default, as every Gymnasium vector environment does, so Gymnasium's vector
    wrappers (``NormalizeObservation``, ``RecordEpisodeStatistics``, ...) apply; ``array_type="torch"``
    returns torch tensors on ``device`` instead (no copies: for loops that stay on the GPU).
    ``infos`` equal those of Gymnasium's ``SyncVectorEnv`` over single environments (the tests check
    keys, dtypes, masks and values step for step in every autoreset mode): the single environment's keys
    (``index``, ``glimpse``, ``value``, ``prediction``, ``label``, ``correct``) at ``reset`` and at every
    ``step``, each a batch, and beside each ``"_key"`` the bool mask of the sub-environments that
    reported it (all at a step; those reset by a ``reset`` with ``reset_mask``). A value not known yet
    holds the single environment's placeholder: ``label`` is -1 and ``correct`` False except where an
    episode ended at this step, so no label reaches a consumer that ignores the masks.

    **Autoreset** (the ``autoreset_mode`` attribute and ``metadata["autoreset_mode"]``):
    ``"next_step"`` (Gymnasium's default) resets a finished sub-environment on the following ``step``,
    which ignores that sub-environment's action and returns its first observation with reward 0 and its
    reset info. ``"same_step"`` resets it within the step that ends it: the returned observation and
    info are the new episode's first; the ended episode's last ones are ``infos["final_obs"]`` and
    ``infos["final_info"]`` (where ``infos["_final_obs"]`` / ``["_final_info"]``), as Gymnasium defines
    them (``final_obs`` an object array, ``None`` where no episode ended; with ``array_type="torch"``
    the batch itself). ``"disabled"`` resets nothing by itself: ``reset(options={"reset_mask": mask})``
    restarts the finished sub-environments, and a ``step`` while one is finished raises ``RuntimeError``.

    ``reset(options=...)`` takes, per sub-environment, ``index`` (``(N,)`` ints),
    or ``image`` (``(N, 28, 28)`` ``uint8``) and ``label`` (``(N,)``), and ``reset_mask`` (``(N,)``
    bool: reset only those); ``seed`` is an int ``s`` (sub-environment ``k`` gets ``s + k``) or ``N``
    seeds (a list of ints or ``None``, or an integer array). Bad actions and options are refused before
    anything is converted or changed, naming the first few offending rows and their count.

    :param num_envs: batch size ``N``.
    :param max_glimpses: episode length ``T``.
    :param split: ``"train"`` or ``"test"``.
    :param sampler: ``"nearest"``, ``"bilinear"``, ``"bicubic"``, ``"gaussian"`` or a ``Sampler``.
    :param reward: ``"dense"`` or ``"final"``.
    :param perception: ``None`` (packaged core), a checkpoint path, or a ``PerceptionCore`` (shared).
    :param learn_perception: train the core after each batch of finished episodes (perception optimizer).
    :param perception_lr: that optimizer's learning rate.
    :param device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    :param autoreset_mode: ``"next_step"``, ``"same_step"`` or ``"disabled"`` (or the
        ``gymnasium.vector.AutoresetMode``).
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
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}.")
        autoreset_mode = (
            AUTORESET_MODES.get(autoreset_mode, autoreset_mode) if isinstance(autoreset_mode, str) else autoreset_mode
        )
        if autoreset_mode not in AUTORESET_MODES.values():
            raise ValueError(
                f"Unknown autoreset_mode {autoreset_mode!r}; valid values are {list(AUTORESET_MODES)} "
                "(or gymnasium.vector.AutoresetMode.NEXT_STEP / SAME_STEP / DISABLED)."
            )
        if array_type not in ARRAY_TYPES:
            raise ValueError(f"Unknown array_type {array_type!r}; valid values are {list(ARRAY_TYPES)}.")
        if render_mode is not None:
            raise ValueError(
                "MnistGlimpseVectorEnv does not render; render single episodes with "
                "gymnasium.make('MnistGlimpse-v0', render_mode='rgb_array')."
            )
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.autoreset_mode = autoreset_mode
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

    def _seeds(self, seed: Any) -> list[int | None]:
        """One seed per sub-environment: ``None`` (fresh entropy), an int ``s`` (``s + k``, as
        ``SyncVectorEnv``), or a sequence (list, tuple or integer array) of ``N`` ints or ``None``."""
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
            if seed < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
            return [int(seed) + k for k in range(self.num_envs)]
        if isinstance(seed, np.ndarray):
            if seed.shape != (self.num_envs,) or seed.dtype.kind not in "iu" or bool((seed < 0).any()):
                raise ValueError(
                    f"seed as an array must hold {self.num_envs} non-negative integers (one per sub-environment), "
                    f"got {seed.dtype} of shape {seed.shape}."
                )
            return [int(s) for s in seed]
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"Got {len(seed)} seeds for {self.num_envs} sub-environments.")
            valid = [
                s is None or (isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s >= 0)
                for s in seed
            ]
            if not all(valid):
                bad = np.logical_not(valid)
                raise ValueError(
                    "seed as a list must hold non-negative integers or None, one per sub-environment; not so in "
                    f"{describe_rows(bad, np.asarray(seed, dtype=object))}."
                )
            return [None if s is None else int(s) for s in seed]
        raise ValueError(f"seed must be an int or a list of {self.num_envs} ints, got {seed!r:.80}.")

    def _seed(self, seeds: list[int | None], mask: np.ndarray | None = None) -> None:
        """One generator per sub-environment, seeded from ``seeds[k]`` (:meth:`_seeds`), as
        ``SyncVectorEnv`` seeds its copies. A stated Python pass over ``N``, at seeding only.
        With a ``reset_mask``, only those sub-environments are reseeded (as ``SyncVectorEnv`` does);
        the others keep their image streams."""
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
            self._seed(self._seeds(0))  # placeholders: their states are replaced next
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
        self, *, seed: int | list[int | None] | np.ndarray | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        parsed = parse_image_options(options, (self.num_envs,))
        mask = parsed.get("reset_mask")
        if self._streams is None and mask is not None and not mask.all():
            raise ValueError("The first reset starts every sub-environment: pass no reset_mask (or an all-True one).")
        if mask is not None and not mask.any():
            raise ValueError("reset option 'reset_mask' selects no sub-environment; set at least one entry True.")
        if "index" in parsed:  # checked before anything changes: a refused reset leaves the episodes as they were
            chosen = parsed["index"] if mask is None else parsed["index"][mask]
            bad = (chosen < 0) | (chosen >= len(self.sim.data))
            if bad.any():
                raise ValueError(
                    f"reset option 'index' must be in [0, {len(self.sim.data)}); out of range in "
                    f"{describe_rows(bad, chosen)}."
                )
        if seed is not None or self._streams is None:
            self._seed(self._seeds(seed), mask)
        rows = torch.ones_like(self._needs_reset) if mask is None else torch.as_tensor(mask, device=self.device)
        self._reset_rows(rows, parsed)
        return self._out(self._observation()), self._out(self._reset_info(rows))

    def _reset_info(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The info of a reset of the sub-environments in ``rows`` (bool ``(N,)``, the ``_key`` masks)."""
        return self._info(self.sim.reset_info(), rows)

    @staticmethod
    def _info(values: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``values`` with a ``"_key"`` mask beside each key (Gymnasium's vector convention)."""
        info: dict[str, torch.Tensor] = {}
        for key in INFO_KEYS:
            info[key], info[f"_{key}"] = values[key], mask.clone()
        return info

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
        # checked before anything changes, also on the autoreset step (which ignores them)
        actions = as_actions(actions, self.action_type, self.num_envs, self.device)
        pending = self._needs_reset.clone()  # _reset_rows clears _needs_reset in place
        if self.autoreset_mode == AutoresetMode.DISABLED and bool(pending.any()):
            raise RuntimeError(
                f"autoreset_mode='disabled': episodes ended and were not reset in {describe_rows(pending)}; "
                "reset them with reset(options={'reset_mask': mask}) before the next step."
            )
        everyone = torch.ones_like(pending)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and bool(pending.any()):
            if bool(pending.all()):  # the usual case: every episode ended together
                self._reset_rows(pending)
                zeros, info = self._false.float(), self._reset_info(everyone)
                return self._out((self._observation(), zeros, self._false.clone(), self._false.clone(), info))
            result = self.sim.step(actions, active=~pending)
            self._reset_rows(pending)  # they return the reset's observation and info
            observation, stepped = self._observation(), ~pending
        else:
            result = self.sim.step(actions)
            observation = result.observation if self.obs_type == "summary" else self._observation()
            stepped = everyone
        terminated = result.terminated
        if self.autoreset_mode == AutoresetMode.SAME_STEP and bool(terminated.any()):
            final_info = self._info(self.sim.step_info(result, stepped, terminated), terminated)
            final_obs = self._final_obs(observation, terminated)
            self._reset_rows(terminated)  # the returned observation and info are the new episodes' first
            observation = self._observation()
            info = self._info(self.sim.step_info(result, ~terminated, self._false), everyone)
            info["final_obs"], info["_final_obs"] = final_obs, terminated.clone()
            info["final_info"], info["_final_info"] = final_info, terminated.clone()
        else:
            info = self._info(self.sim.step_info(result, stepped, terminated), everyone)
            if self.autoreset_mode != AutoresetMode.SAME_STEP:
                self._needs_reset = terminated.clone()
        return self._out((observation, result.reward, terminated, self._false.clone(), info))

    def _final_obs(self, observation: Any, ended: torch.Tensor) -> Any:
        """``infos["final_obs"]``: with ``array_type="numpy"`` Gymnasium's object array of ``N`` entries,
        the last observation where ``ended`` and ``None`` elsewhere (a pass over the ended rows, to build
        the per-row objects that format holds); with ``"torch"`` the batch itself (valid where ``ended``)."""
        if self.array_type == "torch":
            return observation
        observation, rows = self._out(observation), np.flatnonzero(ended.cpu().numpy())
        if isinstance(observation, dict):
            per_row = ({key: value[row] for key, value in observation.items()} for row in rows)
        else:
            per_row = (observation[row] for row in rows)
        final = np.full(self.num_envs, None, dtype=object)
        final[rows] = np.fromiter(per_row, dtype=object, count=len(rows))
        return final

    def _out(self, value: Any) -> Any:
        """Convert (nested) tensors to numpy when ``array_type="numpy"``."""
        if self.array_type == "torch":
            return value
        if isinstance(value, torch.Tensor):
            return value.cpu().numpy()
        if isinstance(value, dict):
            return {key: self._out(item) for key, item in value.items()}
        if isinstance(value, tuple):
            return tuple(self._out(item) for item in value)
        return value  # already numpy (final_obs)
