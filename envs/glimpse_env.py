"""``MnistGlimpse-v0``: classify a handwritten digit from the few pixels you choose to look at."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.error import DependencyNotInstalled

from .config import PerceptionArg, action_space, build_simulator, observation_space, resolve_device
from .render import draw_trail
from .sampler import Sampler
from .simulator import NON_FINITE_HINT, IndexStreams, describe_rows, dtype_kind


def parse_image_options(options: dict[str, Any] | None, batch_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Check ``reset`` options and return them as arrays of the batch's shape.

    Valid keys: ``index`` (dataset image), or ``image`` (``uint8`` ``(*batch, 28, 28)``) together with
    ``label`` (``*batch``); batched environments also take ``reset_mask`` (bool ``(N,)``).
    """
    valid = {"index", "image", "label", "reset_mask"} if batch_shape else {"index", "image", "label"}
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(
            f"reset options must be a dict such as {{'index': ...}}, got {type(options).__name__} {options!r:.80}; "
            f"valid keys are {sorted(valid)}."
        )
    options = dict(options or {})
    unknown = set(options) - valid
    if unknown:
        raise ValueError(f"Unknown reset options {sorted(unknown)}; valid options are {sorted(valid)}.")
    if ("image" in options) != ("label" in options):
        raise ValueError("reset options 'image' and 'label' go together: pass both, or 'index' instead.")
    if "image" in options and "index" in options:
        raise ValueError("Pass either reset option 'index' or 'image' with 'label', not both.")
    parsed: dict[str, np.ndarray] = {}
    if "index" in options:
        parsed["index"] = np.asarray(options["index"])
        if parsed["index"].shape != batch_shape or not np.issubdtype(parsed["index"].dtype, np.integer):
            raise ValueError(
                f"reset option 'index' must be integer(s) of shape {batch_shape}, got {_show(options['index'])}."
            )
        parsed["index"] = parsed["index"].astype(np.int64)  # any integer dtype indexes like int64
    if "image" in options:
        image, label = np.asarray(options["image"]), np.asarray(options["label"])
        if image.shape != (*batch_shape, 28, 28) or image.dtype != np.uint8:
            raise ValueError(
                f"reset option 'image' must be a uint8 array of shape {(*batch_shape, 28, 28)} (grey levels "
                f"0..255, like MNIST), got {image.dtype} {image.shape}."
            )
        if label.shape != batch_shape or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(
                f"reset option 'label' must be class(es) in 0..9 of shape {batch_shape}, got {_show(options['label'])}."
            )
        bad = (label < 0) | (label > 9)
        if bad.any():
            where = f"out of range in {describe_rows(bad, label)}" if batch_shape else f"got {label!r}"
            raise ValueError(f"reset option 'label' must be class(es) in 0..9; {where}.")
        parsed["image"], parsed["label"] = image, label.astype(np.int64)
    if "reset_mask" in options:
        mask = np.asarray(options["reset_mask"])
        if mask.shape != batch_shape or mask.dtype != np.bool_:
            raise ValueError(f"reset option 'reset_mask' must be a bool array of shape {batch_shape}.")
        parsed["reset_mask"] = mask
    return parsed


def _show(value: Any) -> str:
    """A value for an error message: itself when small, its dtype and shape when it is a batch."""
    array = np.asarray(value, dtype=object) if isinstance(value, (list, tuple)) else np.asarray(value)
    if array.size <= 8:
        return repr(value)
    return f"{type(value).__name__} of dtype {array.dtype} and shape {array.shape}"


def _pygame_installed() -> bool:
    try:
        return importlib.util.find_spec("pygame") is not None
    except ValueError:  # a module entry without a spec (e.g. ``sys.modules["pygame"] = None``)
        return False


def _no_display() -> bool:
    """Whether SDL would have no display to open a window on: Linux (or another X11/Wayland system)
    with neither ``DISPLAY`` nor ``WAYLAND_DISPLAY`` set, and no ``SDL_VIDEODRIVER`` chosen by the user."""
    if sys.platform in ("win32", "darwin") or os.environ.get("SDL_VIDEODRIVER"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class MnistGlimpseEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    ## Description

    An episode shows one MNIST digit that the agent never sees whole. Each step it names a point
    ``(i, j)`` of the 28x28 image; the environment reads the image there with a differentiable
    sampler and feeds ``(histogram, i, j, value)`` to the **RecurrentSoftOrdering** perception core,
    which adds an increment to a soft histogram. A classifier head turns the histogram into a
    10-class prediction. The agent observes the histogram and the prediction and must choose where to
    look next so that the prediction becomes right in few glimpses.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``: the glimpse location, normalised. ``(i, j) = (a + 1) / 2 * 27`` in
    pixel units (``i`` row from the top, ``j`` column from the left, integer points at pixel centres).
    Actions outside ``[-1, 1]`` are clipped; NaN or inf raise ``ValueError`` (the policy produced them:
    a diverged policy?), and so do values that are not real numbers (bool, complex, strings), before any
    conversion.

    ``action_type="pixel"``: ``Discrete(784)``, pixel ``k`` read at its centre ``(k // 28, k % 28)``.
    ``action_masks()`` (the convention of sb3-contrib's ``MaskablePPO``) is a ``(784,)`` bool array,
    ``False`` at the pixels already read.

    ## Observation Space

    ``Box(float32, (H + 10,))`` = ``concat(histogram, prediction)``: the soft histogram (``H =
    channels * n_bins`` of the core, 512 for the packaged 16x32 one; entries in ``[0, max_glimpses]``) and
    the class probabilities after the last glimpse. It is computed only from the pixels sampled;
    neither the rest of the image nor the label reaches the agent.

    ``obs_type="record"``: a ``Dict`` with ``"summary"`` (the vector above), ``"mask"`` (``Box(0, 1,
    (784,))``: 1 at the pixel cells read, cell ``(i, j)`` at index ``i * 28 + j`` as in the pixel
    actions), ``"pixels"`` (``Box(0, 1, (784,))``: the grey level read in each such cell, 0
    elsewhere) and ``"step"`` (``Box(0, T, (1,))``: glimpses taken). A
    glimpse marks the cell of the pixel centre nearest to it (rounding halves to even, as the
    ``nearest`` sampler does) and stores the value its sampler read: the pixel itself for ``nearest``
    or for a glimpse at a centre, an interpolation of the neighbours for ``bilinear`` between centres.
    ``gymnasium.wrappers.FlattenObservation`` turns it into one vector.

    ## Rewards

    ``reward="dense"`` (default): ``log p_t(y) - log p_{t-1}(y)``, the gain in log-probability of the
    true class ``y`` (``p_0 = 0.1``); the episode's return is ``log p_T(y) - log 0.1``.
    ``reward="final"``: 1 at the last step if the prediction's argmax is ``y``, else 0.

    ## Starting State

    An image drawn uniformly from the split (``self.np_random``), the empty histogram and the uniform
    prediction ``[0.1] * 10``. ``reset(options={"index": k})`` takes dataset image ``k``;
    ``reset(options={"image": uint8 (28, 28), "label": int})`` runs on your own digit.

    ## Episode End

    ``terminated=True`` after ``max_glimpses`` glimpses; never truncated (no ``TimeLimit`` is
    registered). ``env.spec.max_episode_steps`` reports ``max_glimpses``, so time-aware wrappers
    (``gymnasium.wrappers.TimeAwareObservation``, which adds the glimpse counter to the observation)
    know the episode length.

    ## Info

    The same keys at ``reset`` and at every ``step``, numpy values of fixed dtype (what Gymnasium's
    vector environments batch and TorchRL's ``auto_register_info_dict`` reads): ``index`` (``np.int64``,
    the dataset image shown, ``-1`` for an image passed in options), ``glimpse`` (``float32 (2,)``, this
    step's ``(i, j)`` in pixels, after clipping), ``value`` (``np.float32``, the grey level sampled
    there, in ``[0, 1]``), ``prediction`` (``float32 (10,)``, the class probabilities observed),
    ``label`` (``np.int64``) and ``correct`` (a 0-d ``bool`` array: the prediction's argmax equals the
    label). What is not known yet holds a placeholder: ``glimpse`` ``[-1, -1]`` and ``value`` ``-1`` at
    ``reset``; ``label`` ``-1`` and ``correct`` ``False`` until the last step, the only one whose info
    holds the true label.

    ## Arguments

    ```python
    gymnasium.make("MnistGlimpse-v0", max_glimpses=25, split="train", sampler="bilinear",
                   reward="dense", perception=None, learn_perception=False, device="cpu",
                   render_mode=None)
    ```

    * ``max_glimpses``: episode length ``T``.
    * ``split``: ``"train"`` (60,000 images) or ``"test"`` (10,000).
    * ``sampler``: ``"nearest"``, ``"bilinear"``, ``"bicubic"``, ``"gaussian"`` or a
      :class:`~envs.sampler.Sampler` (see :mod:`envs.sampler`).
    * ``reward``: ``"dense"`` or ``"final"``.
    * ``perception``: ``None`` (the packaged general core), a checkpoint path, or a
      :class:`~envs.perception.PerceptionCore` instance (shared, not copied).
    * ``learn_perception``: train the core online (Adam, ``perception_lr``) with cross-entropy on the
      true label after every episode, from the glimpses of that episode.
    * ``perception_lr``: learning rate of that perception optimizer.
    * ``device``: torch device of the simulation (``"cpu"``, ``"cuda"``, ``"auto"``).
    * ``render_mode``: ``None``, ``"rgb_array"`` (``render()`` returns the digit enlarged, with the
      numbered glimpse trail, the prediction and the true label) or ``"human"`` (the same frame in a
      pygame window, redrawn at every ``reset`` and ``step``; needs ``pip install pygame``, and is listed in
      ``metadata["render_modes"]`` only where pygame is installed). Without a display (neither
      ``DISPLAY`` nor ``WAYLAND_DISPLAY`` set on Linux, and no ``SDL_VIDEODRIVER`` chosen), the window
      opens on SDL's dummy driver, with a warning at ``make``: it shows nothing, and never crashes the
      process.
    * ``obs_type``: ``"summary"`` (the histogram and the prediction) or ``"record"`` (also the cells
      read, their grey levels and the glimpse count).
    * ``action_type``: ``"continuous"`` (a normalised ``(i, j)``) or ``"pixel"`` (``Discrete(784)``).
    * ``array_type``: ``"numpy"``, the only value for a single environment; accepted so that the same
      keyword arguments work in every ``gymnasium.make_vec`` mode (``array_type="torch"`` is for
      ``vectorization_mode="vector_entry_point"``).

    ## Version History

    * v0: initial version; ``spec.max_episode_steps`` reports ``max_glimpses``; the opt-in
      ``obs_type="record"``, ``action_type="pixel"`` and ``render_mode="human"`` leave the defaults as they were.
      The packaged core (``perception=None``) is a general 16x32 ``learned`` core (observation
      ``Box(522,)``), trained to read any policy's glimpses (``python train/pretrain_perception.py
      --preset general``). Earlier releases of v0 packaged the shipped agent's own 16x32 core, kept as
      ``envs/pretrained/perception_shipped_agent.pt`` (the shipped agent runs on it:
      ``agents.shipped.ENV_KWARGS`` passes it), and before that a 32x4 ``plain`` core (``Box(138,)``),
      kept as ``envs/pretrained/perception_32x4.pt``: an agent trained on either passes its path as
      ``perception=`` (``envs.perception.SHIPPED_AGENT_CORE_PATH``, ``envs.perception.CORE_32X4_PATH``).
      Infos are regular: the same keys (``index``, ``glimpse``, ``value``, ``prediction``, ``label``,
      ``correct``) at ``reset`` and at every ``step``, numpy values of fixed dtype, with placeholders
      (``-1``, ``False``) until a value is known, where earlier releases of v0 gave ``index`` at
      ``reset`` only, ``label`` and ``correct`` (Python ``int`` and ``bool``) at the last step only, and
      ``value`` as a Python ``float``.
    """

    #: ``"human"`` is listed only where pygame is installed, so that Gymnasium's checker never asks for a
    #: window that cannot open.
    metadata = {"render_modes": ["human", "rgb_array"] if _pygame_installed() else ["rgb_array"], "render_fps": 4}
    _spec: EnvSpec | None = None

    def __init__(
        self,
        max_glimpses: int = 25,
        split: str = "train",
        sampler: str | Sampler = "bilinear",
        reward: str = "dense",
        perception: PerceptionArg = None,
        learn_perception: bool = False,
        perception_lr: float = 1e-3,
        device: torch.device | str = "cpu",
        render_mode: str | None = None,
        array_type: str = "numpy",
        obs_type: str = "summary",
        action_type: str = "continuous",
    ) -> None:
        if array_type != "numpy":
            raise ValueError(
                f"MnistGlimpseEnv returns numpy arrays; array_type={array_type!r} is for the batched env: "
                "gymnasium.make_vec('MnistGlimpse-v0', num_envs=N, vectorization_mode='vector_entry_point', "
                "array_type='torch')."
            )
        if render_mode == "human" and not _pygame_installed():
            raise DependencyNotInstalled(
                'render_mode="human" shows the episode in a pygame window, and pygame is not installed: '
                'pip install pygame (or "mnist-glimpse[human]"); render_mode="rgb_array" needs no window.'
            )
        if render_mode is not None and render_mode not in ("human", "rgb_array"):
            raise ValueError(f"Unknown render_mode {render_mode!r}; valid values are [None, 'human', 'rgb_array'].")
        self._dummy_display = render_mode == "human" and _no_display()
        if self._dummy_display:
            gym.logger.warn(
                'render_mode="human" without a display (DISPLAY, WAYLAND_DISPLAY and SDL_VIDEODRIVER are unset): '
                "the window opens on SDL's dummy video driver and shows nothing. Set DISPLAY to see it, or "
                'use render_mode="rgb_array" for the frames.'
            )
        self._window: Any = None  # the pygame window and clock of render_mode="human", opened on first use
        self._clock: Any = None
        self.render_mode = render_mode
        self.device = resolve_device(device)
        self.sim = build_simulator(
            1,
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
        self.action_space = action_space(action_type)
        self.observation_space = observation_space(self.sim.core, self.max_glimpses, obs_type)
        self._streams: IndexStreams | None = None
        self._all_rows = torch.ones(1, dtype=torch.bool, device=self.device)

    @property
    def core(self):
        """The perception core this environment runs."""
        return self.sim.core

    @property
    def spec(self) -> EnvSpec | None:
        """The spec ``gymnasium.make`` gave this env, with ``max_episode_steps = max_glimpses`` (the
        episode length, for time-aware wrappers; the episode ends by termination, so no ``TimeLimit``
        wrapper is involved)."""
        return self._spec

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        if value is not None and value.max_episode_steps is None:
            value = dataclasses.replace(value, max_episode_steps=self.max_glimpses)
        self._spec = value

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        parsed = parse_image_options(options, ())
        if self._streams is None or self._streams.generators[0] is not self.np_random:
            self._streams = IndexStreams([self.np_random], len(self.sim.data))
        if "image" in parsed:
            self.sim.reset(
                self._all_rows,
                images=torch.as_tensor(parsed["image"][None], device=self.device),
                labels=torch.as_tensor(parsed["label"][None], device=self.device),
            )
        else:
            if "index" in parsed:
                index = np.asarray([parsed["index"]])
                if not 0 <= index[0] < len(self.sim.data):
                    raise ValueError(f"reset option 'index' must be in [0, {len(self.sim.data)}), got {index[0]}.")
            else:
                index = self._streams.next(np.zeros(1, dtype=np.int64))
            self.sim.reset(self._all_rows, indices=torch.as_tensor(index, device=self.device))
        if self.render_mode == "human":
            self._show()
        return self._observation(), self._info(self.sim.reset_info())

    def _observation(self) -> np.ndarray | dict[str, np.ndarray]:
        if self.obs_type == "summary":
            return self.sim.observation()[0].cpu().numpy()
        return {key: value[0].cpu().numpy() for key, value in self.sim.record_observation().items()}

    def action_masks(self) -> np.ndarray:
        """``(784,)`` bool: ``True`` at the pixels not read yet in this episode (``action_type="pixel"``)."""
        if self.action_type != "pixel":
            raise ValueError('action_masks() is for action_type="pixel" (Discrete(784) actions).')
        return ~self.sim.read[0].flatten().cpu().numpy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._streams is None:
            raise RuntimeError("Call reset() before step().")
        action = self._checked(action)
        result = self.sim.step(torch.as_tensor(action[None], device=self.device))
        terminated = bool(result.terminated[0])
        info = self._info(self.sim.step_info(result, self._all_rows, result.terminated))
        if self.render_mode == "human":
            self._show()
        return self._observation(), float(result.reward[0]), terminated, False, info

    @staticmethod
    def _info(values: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The single episode's row of the simulator's info, the same keys at ``reset`` and at every
        ``step``: numpy values of fixed dtype (``np.int64`` / ``np.float32`` scalars, ``float32`` arrays),
        and ``correct`` a 0-d ``bool`` array (a numpy bool scalar would become an object array in
        Gymnasium's vector environments, which batch numbers and arrays by dtype)."""
        row = {key: value[0].cpu().numpy() for key, value in values.items()}
        return {key: array if array.ndim or array.dtype == np.bool_ else array[()] for key, array in row.items()}

    def _checked(self, action: Any) -> np.ndarray:
        """The action, checked before any conversion: ``int64`` pixel index or ``float32 (2,)``."""
        try:
            action = np.asarray(action)
        except ValueError as error:  # a ragged nested sequence
            raise ValueError(f"Expected one action for one environment: {error}") from None
        if self.action_type == "pixel":
            if action.shape != () or dtype_kind(action) not in "iu" or not 0 <= action < 784:
                raise ValueError(f"Expected a pixel action: one integer i * 28 + j in [0, 784), got {action!r}.")
            return action.astype(np.int64)
        if dtype_kind(action) not in "fiu":
            raise ValueError(
                f"Actions are glimpse coordinates, real numbers in [-1, 1], got dtype {action.dtype} ({action!r:.80}); "
                "pass a float array such as np.array([0.1, 0.2], dtype=np.float32)."
            )
        if action.shape != (2,):
            raise ValueError(
                f"Expected an action of shape (2,) (normalised (i, j) in [-1, 1]), got shape {action.shape}."
            )
        if action.dtype.kind == "f" and action.dtype != np.float32:  # finite values past float32's range
            action = np.where(np.isfinite(action), np.clip(action, -2.0, 2.0), action)  # clip, not overflow to inf
        action = action.astype(np.float32)
        if not np.isfinite(action).all():
            raise ValueError(f"Action {action.tolist()} contains NaN or inf: {NON_FINITE_HINT}.")
        return action

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array' to gymnasium.make.")
            return None
        if self.render_mode == "human":
            self._show()
            return None
        return self._frame()

    def _show(self) -> None:
        """Draw the current frame in the pygame window (opened on first use), at ``render_fps``."""
        import pygame

        frame = self._frame()
        if self._window is None:
            if self._dummy_display:  # SDL's own choice without a display (offscreen, through EGL) can crash
                # the process later, when torch loads triton; the dummy driver loads no graphics library
                previous = os.environ.get("SDL_VIDEODRIVER")
                os.environ["SDL_VIDEODRIVER"] = "dummy"  # read by SDL once, here: the process's setting comes back
                try:
                    pygame.display.init()
                finally:
                    if previous is None:
                        del os.environ["SDL_VIDEODRIVER"]
                    else:
                        os.environ["SDL_VIDEODRIVER"] = previous
            else:
                pygame.display.init()  # the display alone: no audio
            self._window = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
            pygame.display.set_caption("MnistGlimpse-v0")
            self._clock = pygame.time.Clock()
        self._window.blit(pygame.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = self._clock = None
        super().close()

    def _frame(self) -> np.ndarray:
        """The ``rgb_array`` frame: the digit enlarged, the numbered trail, the prediction and the label."""
        steps = int(self.sim.elapsed[0])
        image = (self.sim.images[0] * 255.0).round().to(torch.uint8).cpu().numpy()
        prediction = self.sim.prediction[0].cpu().numpy()
        label = int(self.sim.labels[0])
        return draw_trail(image, self.sim.trail[0, :steps].cpu().numpy(), prediction, label=label)
