"""The PPO glimpse agent (Stable-Baselines3): its network and an adapter to the project's policy
protocol. The run around SB3's ``learn`` (an accuracy probe, the progress bar, the resume state) is
train/ppo.py's.

The SB3 policy (:class:`GlimpseActorCriticPolicy`) is an ``ActorCriticPolicy`` (Gaussian actions,
separate actor and critic MLPs) over the observation scaled to ``[0, 1]`` (:class:`ScaledObservation`:
histogram / ``T``, probabilities as they are) plus ``t / T`` (:class:`VecStepFeature`), with an
optional learned action offset per glimpse. Why the last two: the environment's observation does
not say how many glimpses were taken, and a Gaussian policy's mean starts at the centre; PPO then
improves the *stochastic* policy (whose noise spreads the glimpses) while the deterministic one keeps
looking at nearly one pixel, far below the sampled policy's accuracy
(``experiments/results/studies/sb3_plain_mlp_policy.json``). Starting from a random fixed sequence
(offsets ``U(-1, 1)``) with small action noise removes that gap.

:class:`SB3GlimpsePolicy` turns the SB3 policy into an :class:`agents.rollout.GlimpsePolicy`, the
deterministic action (the Gaussian's mean, clipped to ``[-1, 1]`` as the environment clips it), so
:func:`agents.evaluation.accuracy_by_glimpse` and :func:`agents.checkpoint.save_agent` work on it
like on every other agent. It is rebuilt from ``(config, state_dict)`` alone (:meth:`SB3GlimpsePolicy.from_checkpoint_config`),
so agent checkpoints need neither the SB3 zip nor pickled classes.

With pixel actions (``train/ppo.py --action-type pixel``) the agent is sb3-contrib's ``MaskablePPO``
on the record observation (``obs_type="record"``, ``action_type="pixel"``), and its actor is the
differentiable agent's own policy class: :class:`PixelActorCriticPolicy` puts a
:class:`~agents.pixel_attention.PixelAttention` (``memory="pixels"``) in the place of SB3's actor
network, its 784 scores the categorical's logits (the pixels already read masked by the environment's
``action_masks()``), beside an MLP critic. The policy that acts and is saved is that
``PixelAttention``, so a PPO agent and a differentiable one load, act and evaluate alike, and PPO can
start from the differentiable agent's weights (``--init-from``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
from torch import nn

from agents.baselines import SEQUENCE_INITS, FixedSequence, initial_sequence
from agents.checkpoint import SavedPolicy, load_agent
from agents.pixel_attention import NUM_PIXELS, PixelAttention
from envs.config import short_repr
from envs.perception import PerceptionCore

POLICY_KIND = "sb3-ppo"
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ScaledObservation(BaseFeaturesExtractor):
    """``observation / observation_space.high`` (entries with ``high <= 0`` or infinite are kept as
    they are): the histogram, in ``[0, T]``, becomes ``[0, 1]`` like the probabilities."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=int(np.prod(observation_space.shape)))
        high = np.asarray(observation_space.high, dtype=np.float32).reshape(-1)
        scale = np.where(np.isfinite(high) & (high > 0), 1.0 / np.where(high > 0, high, 1.0), 1.0)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations.flatten(1) * self.scale


class VecStepFeature(VecEnvWrapper):
    """Appends ``t / T`` (glimpses taken so far over the episode length) to every observation.

    The environment's observation does not say how many glimpses were taken; without it a
    deterministic policy that starts by sending every glimpse to the same place sees nearly the same
    observation each step and keeps doing so. :class:`SB3GlimpsePolicy` appends the same feature from
    the ``step`` argument of the :class:`~agents.rollout.GlimpsePolicy` protocol.
    """

    def __init__(self, venv: VecEnv, max_glimpses: int) -> None:
        space = venv.observation_space
        low = np.append(np.asarray(space.low, dtype=np.float32), np.float32(0.0))
        high = np.append(np.asarray(space.high, dtype=np.float32), np.float32(1.0))
        super().__init__(venv, observation_space=short_repr(spaces.Box(low, high, dtype=np.float32)))
        self.max_glimpses = max_glimpses
        self.elapsed = np.zeros(venv.num_envs, dtype=np.float32)

    def _augment(self, observation: np.ndarray, elapsed: np.ndarray) -> np.ndarray:
        return np.concatenate([observation, (elapsed / self.max_glimpses)[:, None]], axis=1, dtype=np.float32)

    def reset(self) -> VecEnvObs:
        observation = self.venv.reset()
        self.elapsed[:] = 0.0
        return self._augment(observation, self.elapsed)

    def state_dict(self) -> dict:
        """The wrapped environment's state and the glimpse counters."""
        return {"venv": self.venv.state_dict(), "elapsed": torch.from_numpy(self.elapsed.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.venv.load_state_dict(state["venv"])
        self.elapsed = state["elapsed"].numpy().copy()

    def step_wait(self) -> VecEnvStepReturn:
        observation, reward, dones, infos = self.venv.step_wait()
        self.elapsed += 1.0
        if dones.any():
            ended = np.flatnonzero(dones)
            for k in ended.tolist():  # the dicts of finished episodes are fresh ones: safe to fill in
                terminal = infos[k]["terminal_observation"]
                infos[k]["terminal_observation"] = self._augment(terminal[None], self.elapsed[k : k + 1])[0]
            self.elapsed[ended] = 0.0
        return self._augment(observation, self.elapsed), reward, dones, infos


class StepOffsetMlpExtractor(MlpExtractor):
    """SB3's ``MlpExtractor`` whose actor latent also carries ``one_hot(t)``, read from the last
    feature (``t / T``, :class:`VecStepFeature`): the linear action head then adds a learned offset
    ``theta_t`` per glimpse, ``mean_t = W h_t + theta_t + b`` (as ``AttentionNetwork(step_bias=True)``
    does for the differentiable agent): a learned fixed sequence plus an adaptive correction."""

    def __init__(
        self, feature_dim: int, net_arch: Any, activation_fn: type[nn.Module], glimpses: int, device: Any = "auto"
    ) -> None:
        super().__init__(feature_dim, net_arch, activation_fn, device)
        self.glimpses = glimpses
        self.latent_dim_pi += glimpses

    def step_one_hot(self, features: torch.Tensor) -> torch.Tensor:
        step = (features[:, -1] * self.glimpses).round().long().clamp(0, self.glimpses - 1)
        return nn.functional.one_hot(step, self.glimpses).to(features.dtype)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.policy_net(features), self.step_one_hot(features)], dim=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)


class GlimpseActorCriticPolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` with optional per-glimpse action offsets (``step_offsets=T``; 0 = off,
    the plain SB3 MLP policy). The offsets start as a fixed sequence rather than ``T`` glimpses at the
    centre: ``step_offsets_init="uniform"`` draws it ``U(-1, 1)`` (like :class:`~agents.baselines.FixedSequence`),
    ``"spread"`` takes :func:`~agents.baselines.spread_sequence`. Needs :class:`VecStepFeature` observations."""

    def __init__(self, *args: Any, step_offsets: int = 0, step_offsets_init: str = "uniform", **kwargs: Any) -> None:
        self.step_offsets = step_offsets
        self.step_offsets_init = step_offsets_init
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        if not self.step_offsets:
            return super()._build_mlp_extractor()
        self.mlp_extractor = StepOffsetMlpExtractor(
            self.features_dim, self.net_arch, self.activation_fn, self.step_offsets, self.device
        )

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if self.step_offsets:
            with torch.no_grad():
                if self.step_offsets_init == "uniform":
                    self.action_net.weight[:, -self.step_offsets :].uniform_(-1.0, 1.0)
                else:
                    start = initial_sequence(self.step_offsets, self.step_offsets_init)
                    self.action_net.weight[:, -self.step_offsets :] = start.T.to(self.action_net.weight)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "step_offsets": self.step_offsets,
            "step_offsets_init": self.step_offsets_init,
        }

    @torch.no_grad()
    def start_from_sequence(self, locations: torch.Tensor) -> None:
        """Make the deterministic policy start as the fixed sequence ``locations`` ``(T, 2)`` in ``[-1, 1]``:
        the per-glimpse offsets become ``locations`` and the action head's bias zero (its weights on
        the hidden features stay SB3's small orthogonal init, gain 0.01, so the adaptive correction
        starts near zero). Used to warm-start PPO from :class:`~agents.baselines.FixedSequence`.
        """
        if not self.step_offsets:
            raise ValueError("start_from_sequence needs per-glimpse offsets (PolicyConfig(step_offsets=True)).")
        if tuple(locations.shape) != (self.step_offsets, 2):
            raise ValueError(
                f"The sequence has shape {tuple(locations.shape)} but this policy has {self.step_offsets} glimpses; "
                f"train the fixed sequence with the same --max-glimpses (expected shape ({self.step_offsets}, 2))."
            )
        self.action_net.weight[:, -self.step_offsets :] = locations.T.to(self.action_net.weight)
        self.action_net.bias.zero_()


@dataclass
class PolicyConfig:
    """What rebuilds the SB3 policy: the observation space's bounds and the network's shape.

    :param observation_high: ``observation_space.high`` (the low bound is 0).
    :param hidden: widths of the actor's and the critic's hidden layers (separate networks).
    :param activation: ``"tanh"`` or ``"relu"``.
    :param log_std_init: initial log standard deviation of the Gaussian actions.
    :param step_feature: the observation ends with ``t / glimpses`` (:class:`VecStepFeature`).
    :param glimpses: ``T`` of that feature (the training episode length).
    :param step_offsets: learned per-glimpse action offsets (:class:`GlimpseActorCriticPolicy`;
        needs ``step_feature``).
    :param step_offsets_init: how the offsets start: ``"uniform"`` or ``"spread"``
        (:data:`agents.baselines.SEQUENCE_INITS`).
    """

    observation_high: list[float]
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    log_std_init: float = -1.5
    step_feature: bool = False
    glimpses: int = 0
    step_offsets: bool = False
    step_offsets_init: str = "uniform"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; valid values are {list(ACTIVATIONS)}.")
        if self.step_feature and self.glimpses < 1:
            raise ValueError("PolicyConfig(step_feature=True) needs the episode length glimpses >= 1.")
        if self.step_offsets and not self.step_feature:
            raise ValueError("PolicyConfig(step_offsets=True) needs step_feature=True (the offsets are chosen by t).")
        if self.step_offsets_init not in SEQUENCE_INITS:
            raise ValueError(
                f"Unknown step_offsets_init {self.step_offsets_init!r}; valid values are {list(SEQUENCE_INITS)}."
            )

    @classmethod
    def for_space(cls, observation_space: spaces.Box, **kwargs: Any) -> PolicyConfig:
        return cls([float(x) for x in np.asarray(observation_space.high).reshape(-1)], **kwargs)

    def observation_space(self) -> spaces.Box:
        high = np.asarray(self.observation_high, dtype=np.float32)
        return spaces.Box(np.zeros_like(high), high, dtype=np.float32)

    def policy_kwargs(self) -> dict[str, Any]:
        """``policy_kwargs`` for ``PPO(GlimpseActorCriticPolicy, ...)``."""
        return {
            "step_offsets": self.glimpses if self.step_offsets else 0,
            "step_offsets_init": self.step_offsets_init,
            "net_arch": {"pi": list(self.hidden), "vf": list(self.hidden)},
            "activation_fn": ACTIVATIONS[self.activation],
            "log_std_init": self.log_std_init,
            "features_extractor_class": ScaledObservation,
        }


def load_fixed_sequence(path: str | Path, max_glimpses: int) -> tuple[torch.Tensor, PerceptionCore]:
    """``(locations (T, 2), core)`` of a fixed-sequence agent checkpoint (``train/differentiable.py
    --preset fixed-sequence``), to warm-start PPO with :meth:`GlimpseActorCriticPolicy.start_from_sequence`."""
    policy, core, checkpoint = load_agent(path)
    if not isinstance(policy, FixedSequence):
        raise ValueError(
            f"{path} holds a {checkpoint['policy']['kind']!r} policy; --init-from needs a fixed-sequence "
            "checkpoint (python train/differentiable.py --preset fixed-sequence --out DIR, then DIR/checkpoint.pt)."
        )
    locations = policy.locations()
    if locations.shape[0] != max_glimpses:
        raise ValueError(
            f"{path} is a sequence of {locations.shape[0]} glimpses but PPO runs {max_glimpses}; "
            f"train it with --max-glimpses {max_glimpses}."
        )
    return locations, core


def glimpse_action_space() -> spaces.Box:
    return spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


class SB3GlimpsePolicy(SavedPolicy, nn.Module):
    """An SB3 ``ActorCriticPolicy`` as a :class:`~agents.rollout.GlimpsePolicy`:
    ``policy(observation (B, H + 10), step) -> clip(mean action, -1, 1)`` ``(B, 2)`` (with
    ``config.step_feature``, ``step / glimpses`` is appended to the observation first, as
    :class:`VecStepFeature` does in training).

    :param policy: the SB3 policy (``model.policy``), used as is (not copied).
    :param config: the :class:`PolicyConfig` it was built from.
    """

    def __init__(self, policy: ActorCriticPolicy, config: PolicyConfig) -> None:
        super().__init__()
        self.policy = policy
        self.config = config

    def forward(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        if self.config.step_feature:
            observation = torch.cat(
                [observation, observation.new_full((observation.shape[0], 1), step / self.config.glimpses)], dim=1
            )
        return self.policy._predict(observation, deterministic=True).clamp(-1.0, 1.0)

    checkpoint_kind = POLICY_KIND

    def checkpoint_config(self) -> dict[str, Any]:
        """The :class:`PolicyConfig`, as a dict (:func:`agents.checkpoint.save_agent`)."""
        return asdict(self.config)

    @classmethod
    def from_checkpoint_config(cls, config: dict[str, Any] | PolicyConfig) -> SB3GlimpsePolicy:
        """A freshly initialised policy of the shape ``config`` describes (load its state dict next)."""
        config = config if isinstance(config, PolicyConfig) else PolicyConfig(**config)
        policy = GlimpseActorCriticPolicy(
            config.observation_space(), glimpse_action_space(), lambda _: 0.0, **config.policy_kwargs()
        )
        return cls(policy, config)


#: The keys of the record observation, in the order :class:`RecordFeatures` concatenates them.
RECORD_KEYS = ("summary", "mask", "pixels", "step")


class RecordFeatures(BaseFeaturesExtractor):
    """The record observation as one vector ``concat(summary, mask, pixels, step)``, ``(B, H + 10 + 2 * 784 + 1)``,
    unscaled: :class:`PixelActorCriticPolicy` splits it again for its actor, which reads it as the
    environment gives it."""

    def __init__(self, observation_space: spaces.Dict) -> None:
        missing = [key for key in RECORD_KEYS if key not in observation_space.spaces]
        if missing:
            raise ValueError(
                f"RecordFeatures reads the record observation (obs_type='record'); this space lacks {missing}."
            )
        super().__init__(observation_space, sum(int(observation_space[key].shape[0]) for key in RECORD_KEYS))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([observations[key] for key in RECORD_KEYS], dim=-1)


class PixelAttentionExtractor(nn.Module):
    """SB3's ``mlp_extractor`` of :class:`PixelActorCriticPolicy`: the actor's latent is a
    :class:`~agents.pixel_attention.PixelAttention`'s 784 scores (``latent_dim_pi = 784``, turned into
    logits by an identity ``action_net``); the critic's is an MLP of ``concat(histogram / T,
    prediction, mask, pixels, step / T)``.

    :param attention: the actor, reading ``{"summary", "mask", "pixels"}`` and the step of each row.
    :param hidden: the critic's hidden widths.
    :param activation: the critic's activation class.
    """

    def __init__(self, attention: PixelAttention, hidden: list[int], activation: type[nn.Module]) -> None:
        super().__init__()
        self.attention = attention
        self.summary_size, self.glimpses = attention.observation_size, attention.max_glimpses
        layers: list[nn.Module] = []
        width = self.summary_size + 2 * NUM_PIXELS + 1
        for size in hidden:
            layers += [nn.Linear(width, size), activation()]
            width = size
        self.critic = nn.Sequential(*layers)
        self.latent_dim_pi, self.latent_dim_vf = NUM_PIXELS, width

    def _split(self, features: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        summary, mask, pixels, step = features.split([self.summary_size, NUM_PIXELS, NUM_PIXELS, 1], dim=-1)
        # the step of an episode's last observation is T; no action is taken from it
        steps = step[:, 0].round().long().clamp(0, self.glimpses - 1)
        return {"summary": summary, "mask": mask, "pixels": pixels}, steps

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        record, steps = self._split(features)
        return self.attention.scores(record, steps)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        histogram = features[:, : self.summary_size - 10] / self.glimpses
        step = features[:, -1:] / self.glimpses
        return self.critic(torch.cat([histogram, features[:, self.summary_size - 10 : -1], step], dim=-1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)


class PixelActorCriticPolicy(MaskableActorCriticPolicy):
    """sb3-contrib's ``MaskableActorCriticPolicy`` whose actor is a :class:`~agents.pixel_attention.PixelAttention`
    (``memory="pixels"``): ``pi(pixel | record) = softmax over the unread pixels of its scores``.

    The observation is the record (:class:`RecordFeatures`); SB3's orthogonal initialisation is off,
    so a warm start (:meth:`start_from`) is kept as it is, and the actor has no layer after the
    scores (``action_net`` is the identity).

    :param attention: :meth:`~agents.pixel_attention.PixelAttention.checkpoint_config` of the actor
        (``memory`` must be ``"pixels"``).
    :param critic_hidden: the critic's hidden widths.
    :param critic_activation: ``"tanh"`` or ``"relu"``.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Any,
        attention: dict[str, Any],
        critic_hidden: list[int] | None = None,
        critic_activation: str = "tanh",
        **kwargs: Any,
    ) -> None:
        if attention.get("memory") != "pixels":
            raise ValueError(
                "PixelActorCriticPolicy acts on the record of the pixels read: its PixelAttention needs "
                f"memory='pixels', got {attention.get('memory')!r}."
            )
        if critic_activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {critic_activation!r}; valid values are {list(ACTIVATIONS)}.")
        self.attention_config = dict(attention)
        self.critic_hidden = list(critic_hidden or [64, 64])
        self.critic_activation = critic_activation
        kwargs.update(features_extractor_class=RecordFeatures, ortho_init=False)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    @property
    def attention(self) -> PixelAttention:
        """The actor: the policy that acts, is evaluated and is saved."""
        return self.mlp_extractor.attention

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PixelAttentionExtractor(
            PixelAttention.from_checkpoint_config(self.attention_config),
            self.critic_hidden,
            ACTIVATIONS[self.critic_activation],
        )

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # the scores are the logits
        # the optimizer again, without the linear layer SB3 built for the actor and dropped here
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            attention=self.attention_config, critic_hidden=self.critic_hidden, critic_activation=self.critic_activation
        )
        return data

    def start_from(self, attention: PixelAttention) -> None:
        """Copy a trained actor's weights (a differentiable agent's ``PixelAttention`` of the same shape)."""
        self.attention.load_state_dict(attention.state_dict())


def load_pixel_agent(path: str | Path, max_glimpses: int) -> tuple[PixelAttention, PerceptionCore]:
    """``(attention, core)`` of a pixel agent with a record (``train/differentiable.py --preset best``),
    to warm-start :class:`PixelActorCriticPolicy` (``train/ppo.py --action-type pixel --init-from``)."""
    policy, core, checkpoint = load_agent(path)
    if not isinstance(policy, PixelAttention) or policy.memory != "pixels":
        kind = checkpoint["policy"]["kind"] + ("" if not isinstance(policy, PixelAttention) else ", memory='none'")
        raise ValueError(
            f"{path} holds a {kind} policy; --action-type pixel --init-from needs a pixel agent with a record "
            "(python train/differentiable.py --preset best --out DIR, then DIR/checkpoint.pt)."
        )
    if policy.max_glimpses != max_glimpses:
        raise ValueError(
            f"{path} chooses {policy.max_glimpses} glimpses but PPO runs {max_glimpses}; pass --max-glimpses {policy.max_glimpses}."
        )
    return policy, core
