"""REINFORCE glimpse agent on the batched environment (:class:`envs.vector_env.MnistGlimpseVectorEnv`).

One batch = ``N`` lockstep episodes of ``T`` glimpses, collected as torch tensors on the env's device
(no numpy round trip, no Python loop over the batch; the only Python loop is over the ``T`` glimpses)::

    o_t   = concat(histogram_t, prediction_t)                        (N, H + 10)   from the env
    a_t   ~ pi(. | o_t) = Normal(mu(o_t, t), diag(sigma^2))           (N, 2)        unclipped sample
    r_t   = env.step(a_t)   (the env clips a_t to [-1, 1])            (N,)

    G_t   = sum_{k >= t} gamma^(k - t) r_k                            (T, N)  return-to-go
    A_t   = G_t - b(o_t, t),  then normalised over the T * N entries  (T, N)
    L_pi  = -mean_{t, n}[ A_t log pi(a_t | o_t) ] - beta * H[pi]      (REINFORCE with baseline)
    L_b   = 1/2 mean_{t, n}[ (b(o_t, t) - G_t)^2 ]                    (baseline regression)

With the env's dense reward ``r_t = log p_t(y) - log p_{t-1}(y)`` and ``gamma = 1`` the return-to-go
telescopes to ``G_t = log p_T(y) - log p_t(y)``: the credit of glimpse ``t`` is how much the class
log-likelihood still rises from there to the end. With ``reward="final"`` it is ``1[argmax p_T = y]``
for every ``t``.

The policy (:class:`GaussianAttentionPolicy`) and the baseline (:class:`ValueBaseline`) are two
separate networks with two Adam optimizers (no shared trunk): the baseline's regression gradient
cannot disturb the features the policy mean is built from, and neither loss needs a weight relative
to the other. The perception core is not touched here: it is either frozen (the packaged core) or
trained by the environment itself (``learn_perception=True``) from the same episodes, as in RAM
(Mnih et al. 2014).

With pixel actions (``action_type="pixel"`` on the record observation) the policy is
:class:`PixelPolicy`: ``pi(k | o_t, t) = softmax_k(scores)`` over the pixels not read yet, the scores
those of a :class:`~agents.pixel_attention.PixelAttention` (``memory="pixels"``, the best agent's
policy class); ``log pi`` is that categorical's, its entropy depends on the state, and the baseline
reads the record's summary. The rest is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from agents.attention import AttentionNetwork
from agents.checkpoint import SavedPolicy
from agents.pixel_attention import PixelAttention
from envs.data import NUM_CLASSES
from envs.vector_env import MnistGlimpseVectorEnv

if TYPE_CHECKING:
    from envs.perception import PerceptionCore


def input_scale(observation_size: int, histogram_scale: float) -> torch.Tensor:
    """Per-entry scale of an observation ``(H + 10,)``: ``1 / histogram_scale`` on the histogram
    (entries up to ``T``, so the first layer sees inputs in ``[0, 1]``), ``1`` on the probabilities."""
    scale = torch.ones(observation_size)
    scale[: observation_size - NUM_CLASSES] = 1.0 / histogram_scale
    return scale


class GaussianAttentionPolicy(SavedPolicy, nn.Module):
    """The stochastic glimpse policy: a diagonal Gaussian over normalised ``(i, j)``.

    ``pi(a | o, t) = Normal(a; mu, diag(sigma^2))`` with

    * ``mu = tanh(MLP(o * s) [+ theta_t])`` ``(B, 2)`` in ``[-1, 1]``: an
      :class:`~agents.attention.AttentionNetwork` on the scaled observation (``s`` from
      :func:`input_scale`; ``theta_t`` only with ``step_bias``);
    * ``sigma = exp(clamp(log_sigma, log_std_min, log_std_max))`` ``(2,)``: learned, independent of
      the state, clamped so it can neither collapse (a stuck policy) nor exceed the image.

    Samples are not squashed: the environment clips them to ``[-1, 1]`` (the clip belongs to the
    dynamics, so ``log pi`` of the unclipped sample is the right score). ``forward(o, t)`` returns the
    deterministic mean ``mu`` so the policy follows :class:`agents.rollout.GlimpsePolicy` and the
    shared evaluation (``accuracy_by_glimpse``, ``train/evaluate.py``) runs it greedily.

    :param observation_size: ``H + 10``.
    :param hidden: width of the attention network's two hidden layers.
    :param max_glimpses: ``T`` (needed with ``step_bias``).
    :param step_bias: add the attention network's learned per-glimpse offsets ``theta_t``.
    :param step_bias_init: how ``theta_t`` starts (:class:`~agents.attention.AttentionNetwork`:
        ``"uniform"`` or ``"spread"``); the saved weights carry ``theta`` whichever it was.
    :param histogram_scale: divides the histogram part of the observation (use ``T``).
    :param log_std_init: initial ``log sigma`` (both coordinates). The default, ``log 0.1`` (about 1.4
        pixels), is the best of std 0.5, 0.2, 0.1 and 0.05 in a sweep of ``train/reinforce.py
        --log-std-init`` (``experiments/results/studies/rl_noise_and_warm_start.json``): wide
        exploration noise makes most sampled glimpses land off the informative spots, and the greedy
        policy that is evaluated learns little from them.
    :param log_std_min: lower clamp of ``log sigma`` (default ``log 0.05``: about 0.7 pixel).
    :param log_std_max: upper clamp of ``log sigma`` (default ``log 1``: half the image width).
    """

    def __init__(
        self,
        observation_size: int,
        hidden: int = 128,
        max_glimpses: int = 0,
        step_bias: bool = False,
        histogram_scale: float = 25.0,
        log_std_init: float = math.log(0.1),
        log_std_min: float = math.log(0.05),
        log_std_max: float = 0.0,
        step_bias_init: str = "uniform",
    ) -> None:
        super().__init__()
        if not log_std_min <= log_std_init <= log_std_max:
            raise ValueError(
                f"log_std_init {log_std_init} must lie in [log_std_min, log_std_max] = [{log_std_min}, {log_std_max}]."
            )
        self.observation_size = observation_size
        self.hidden = hidden
        self.max_glimpses = max_glimpses
        self.step_bias = step_bias
        self.histogram_scale = float(histogram_scale)
        self.log_std_init = float(log_std_init)
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.attention = AttentionNetwork(observation_size, hidden, max_glimpses, step_bias, step_bias_init)
        self.log_std = nn.Parameter(torch.full((2,), self.log_std_init))
        # Derived from the config, so not saved (persistent=False) and rebuilt on load.
        self.register_buffer("input_scale", input_scale(observation_size, self.histogram_scale), persistent=False)

    checkpoint_kind = "gaussian-attention"

    def checkpoint_config(self) -> dict:
        """The constructor arguments (what :mod:`agents.checkpoint` stores to rebuild the policy)."""
        return {
            **self.attention.checkpoint_config(),  # observation_size, hidden, glimpses (max_glimpses), step_bias
            "histogram_scale": self.histogram_scale,
            "log_std_init": self.log_std_init,
            "log_std_min": self.log_std_min,
            "log_std_max": self.log_std_max,
        }

    def mean(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``mu``: observation ``(B, H + 10)`` -> ``(B, 2)`` in ``[-1, 1]``."""
        return self.attention(observation * self.input_scale, step)

    def std(self) -> torch.Tensor:
        """``sigma`` ``(2,)``."""
        return self.log_std.clamp(self.log_std_min, self.log_std_max).exp()

    def forward(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        """The deterministic action (the mean), ``(B, 2)``: the greedy policy used for evaluation."""
        return self.mean(observation, step)

    def distribution(self, observation: torch.Tensor, step: int = 0) -> torch.distributions.Normal:
        """``pi(. | o, t)``: a ``Normal`` with batch shape ``(B, 2)`` (independent coordinates)."""
        mean = self.mean(observation, step)
        return torch.distributions.Normal(mean, self.std().expand_as(mean))

    def sample(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``a ~ pi(. | o, t)``, ``(B, 2)``, unclipped (the environment clips). No gradient."""
        with torch.no_grad():
            mean = self.mean(observation, step)
            return mean + self.std() * torch.randn_like(mean)

    def log_prob(self, observation: torch.Tensor, action: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``log pi(a | o, t)`` summed over the two coordinates: ``(B, H + 10), (B, 2) -> (B,)``."""
        return self.distribution(observation, step).log_prob(action).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        """``H[pi] = sum_d (log sigma_d + 1/2 log(2 pi e))``, a scalar: the same for every state."""
        return (self.log_std.clamp(self.log_std_min, self.log_std_max) + 0.5 * math.log(2.0 * math.pi * math.e)).sum()

    def rollout_terms(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(a_t | o_t, t), H[pi])`` of a rollout: ``(T, N, H + 10), (T, N, 2) -> ((T, N), scalar)``,
        one batched call per glimpse index (``step`` may select a per-glimpse offset)."""
        log_prob = torch.stack([self.log_prob(observations[t], actions[t], t) for t in range(actions.shape[0])])
        return log_prob, self.entropy()


class SampledGlimpses(nn.Module):
    """A :class:`GaussianAttentionPolicy` acting stochastically (``a ~ pi``, clipped to ``[-1, 1]``),
    as a :class:`agents.rollout.GlimpsePolicy`: for measuring the training-time (sampled) policy
    with the shared evaluation, next to the greedy mean."""

    def __init__(self, policy: GaussianAttentionPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor, step: int = 0) -> torch.Tensor:
        return self.policy.sample(observation, step).clamp(-1.0, 1.0)


class PixelPolicy(nn.Module):
    """A :class:`~agents.pixel_attention.PixelAttention` (``memory="pixels"``) as REINFORCE's stochastic
    policy over pixel actions: ``pi(. | o, t) = Categorical(logits = scores(o, t))``, the pixels already
    read at the lowest score (never drawn). ``o`` is the record observation (a dict of ``(B, ...)``
    tensors). The attention is what acts greedily, is evaluated and is saved.

    :param attention: the scores' network.
    """

    def __init__(self, attention: PixelAttention) -> None:
        super().__init__()
        if attention.memory != "pixels":
            raise ValueError("PixelPolicy acts on the record observation: its PixelAttention needs memory='pixels'.")
        self.attention = attention

    def distribution(self, observation: dict[str, torch.Tensor], step: int = 0) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.attention.scores(observation, step))

    def sample(self, observation: dict[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        """``k ~ pi(. | o, t)``, ``(B,)`` pixel indices. No gradient."""
        with torch.no_grad():
            return self.distribution(observation, step).sample()

    def log_prob(self, observation: dict[str, torch.Tensor], action: torch.Tensor, step: int = 0) -> torch.Tensor:
        """``log pi(k | o, t)``, ``(B,)``."""
        return self.distribution(observation, step).log_prob(action)

    def rollout_terms(
        self, observations: dict[str, torch.Tensor], actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(k_t | o_t, t), H[pi])`` of a rollout: the record's ``(T, N, ...)`` tensors and ``(T, N)``
        pixels -> ``((T, N), scalar)``, the entropy averaged over the ``T * N`` states. One distribution
        per glimpse index serves both terms."""
        distributions = [
            self.distribution({key: value[t] for key, value in observations.items()}, t)
            for t in range(actions.shape[0])
        ]
        log_prob = torch.stack([d.log_prob(action) for d, action in zip(distributions, actions)])
        return log_prob, torch.stack([d.entropy().mean() for d in distributions]).mean()


def _summary(observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """The ``(..., H + 10)`` summary of observations: the observation itself, or the record's ``"summary"``."""
    return observations["summary"] if isinstance(observations, dict) else observations


class ValueBaseline(nn.Module):
    """The learned baseline ``b(o_t, t) ~ E[G_t | o_t]``, a separate small MLP (no shared trunk).

    ``b = MLP([o_t * s, t / T])``: ``(B, H + 10)``, ``(B,)`` steps -> ``(B,)``. The step is an input
    because the return-to-go depends on how many glimpses are left, and at ``t = 0`` every
    observation is the same (empty histogram, uniform prediction).

    :param observation_size: ``H + 10``.
    :param max_glimpses: ``T`` (scales the step input).
    :param hidden: width of the two hidden layers.
    :param histogram_scale: as for :class:`GaussianAttentionPolicy`.
    """

    def __init__(
        self, observation_size: int, max_glimpses: int, hidden: int = 64, histogram_scale: float = 25.0
    ) -> None:
        super().__init__()
        self.max_glimpses = max_glimpses
        self.net = nn.Sequential(
            nn.Linear(observation_size + 1, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        self.register_buffer("input_scale", input_scale(observation_size, histogram_scale), persistent=False)

    def forward(self, observation: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        features = torch.cat(
            [observation * self.input_scale, (step.to(observation.dtype) / self.max_glimpses).unsqueeze(-1)], dim=-1
        )
        return self.net(features).squeeze(-1)


@dataclass
class Rollout:
    """One batch of ``N`` complete lockstep episodes of ``T`` glimpses (tensors on the env's device).

    :param observations: ``(T, N, H + 10)`` the observation each action was chosen from (the record
        observation: a dict of ``(T, N, ...)`` tensors).
    :param actions: ``(T, N, 2)`` the sampled (unclipped) actions, or ``(T, N)`` pixel indices.
    :param rewards: ``(T, N)``.
    :param correct: ``(N,)`` bool, final prediction right.
    """

    observations: torch.Tensor | dict[str, torch.Tensor]
    actions: torch.Tensor
    rewards: torch.Tensor
    correct: torch.Tensor

    @property
    def episodic_return(self) -> torch.Tensor:
        """``(N,)`` undiscounted return of each episode."""
        return self.rewards.sum(dim=0)


def make_env(
    num_envs: int,
    max_glimpses: int,
    learn_perception: bool = False,
    perception_lr: float = 1e-3,
    sampler: str = "nearest",
    reward: str = "dense",
    device: torch.device | str = "cpu",
    perception: PerceptionCore | None = None,
    action_type: str = "continuous",
) -> MnistGlimpseVectorEnv:
    """The training environment: ``N`` lockstep episodes on the train split, torch tensors,
    ``same_step`` autoreset (the step that ends a batch already returns the next batch's first
    observations, so batches follow each other without an extra reset call).

    :param max_glimpses: ``T``, the episode length.
    :param learn_perception: the env trains its core with cross-entropy after each batch (read it as
        ``env.core``); without it the core is never trained (frozen).
    :param perception: the core to start from (``None``: the packaged one; a learning env copies it
        only if it is the packaged one, see :func:`envs.config.resolve_perception`).
    :param action_type: ``"continuous"`` on the default observation, or ``"pixel"`` on the record
        observation (:class:`PixelPolicy`).
    """
    return MnistGlimpseVectorEnv(
        num_envs=num_envs,
        max_glimpses=max_glimpses,
        split="train",
        sampler=sampler,
        reward=reward,
        perception=perception,
        learn_perception=learn_perception,
        perception_lr=perception_lr,
        device=device,
        autoreset_mode="same_step",
        array_type="torch",
        obs_type="record" if action_type == "pixel" else "summary",
        action_type=action_type,
    )


@torch.no_grad()
def collect_rollout(
    env: MnistGlimpseVectorEnv,
    policy: GaussianAttentionPolicy | PixelPolicy,
    observation: torch.Tensor | dict[str, torch.Tensor],
) -> tuple[Rollout, torch.Tensor | dict[str, torch.Tensor]]:
    """Run one batch of ``N`` episodes from their first observation ``(N, H + 10)`` (or record) to the end.

    Needs every episode at its first glimpse (right after ``reset``, or after a previous batch with
    ``same_step`` autoreset). Returns the rollout and the next batch's first observations.
    Everything runs under ``no_grad``: the actions are recorded and their log-probabilities
    recomputed with gradients in :meth:`ReinforceLearner.update` (one batched pass over ``T * N``).
    """
    if env.metadata["autoreset_mode"] != AutoresetMode.SAME_STEP:
        raise ValueError("collect_rollout needs an env with autoreset_mode='same_step' (see make_env).")
    observations, actions, rewards = [], [], []
    for step in range(env.max_glimpses):
        observations.append(observation)
        actions.append(policy.sample(observation, step))
        observation, reward, terminated, _, info = env.step(actions[-1])
        rewards.append(reward)
    if not bool(terminated.all()):
        raise RuntimeError(
            "The env's episodes were not in lockstep at the start of collect_rollout (some did not end "
            "after T steps); reset() the env before the first batch."
        )
    if isinstance(observations[0], dict):
        stacked = {key: torch.stack([o[key] for o in observations]) for key in observations[0]}
    else:
        stacked = torch.stack(observations)
    rollout = Rollout(stacked, torch.stack(actions), torch.stack(rewards), info["final_info"]["correct"].clone())
    return rollout, observation


def returns_to_go(rewards: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{k >= t} gamma^(k - t) r_k``: ``(T, N) -> (T, N)``; a Python loop over ``T`` only."""
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for step in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[step] + gamma * running
        returns[step] = running
    return returns


@dataclass
class Losses:
    """What :meth:`ReinforceLearner.losses` computes on one rollout.

    :param policy: ``L_pi`` (scalar, with graph into the policy).
    :param baseline: ``L_b`` (scalar, with graph into the baseline), or ``None`` without a baseline.
    :param entropy: ``H[pi]`` (scalar).
    :param returns: ``(T, N)`` ``G_t``.
    :param values: ``(T, N)`` ``b(o_t, t)`` (no graph), or ``None``.
    :param advantages: ``(T, N)`` ``G_t - b`` before normalisation (no graph).
    """

    policy: torch.Tensor
    baseline: torch.Tensor | None
    entropy: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor | None
    advantages: torch.Tensor


@dataclass
class UpdateStats:
    """Scalars of one update (Python floats, for logging)."""

    policy_loss: float
    baseline_loss: float
    entropy: float
    advantage_std: float
    explained_variance: float


class ReinforceLearner:
    """REINFORCE with a learned baseline: one gradient step of each optimizer per batch of episodes.

    :param policy: the :class:`GaussianAttentionPolicy` or :class:`PixelPolicy` (its own Adam, ``learning_rate``).
    :param baseline: the :class:`ValueBaseline` (its own Adam, ``baseline_lr``); ``None`` = no
        baseline (the advantage is the return-to-go, still normalised if asked).
    :param gamma: discount of the return-to-go (1 = the episode's log-likelihood gain, undiscounted).
    :param ent_coef: weight ``beta`` of the entropy bonus (with a state-independent ``sigma`` it only
        pushes ``log sigma`` up).
    :param normalize_advantage: standardise ``A`` over the ``T * N`` entries of the batch.
    :param max_grad_norm: clip each network's gradient norm (``<= 0`` disables).
    """

    def __init__(
        self,
        policy: GaussianAttentionPolicy | PixelPolicy,
        baseline: ValueBaseline | None,
        learning_rate: float = 1e-3,
        baseline_lr: float = 1e-3,
        gamma: float = 1.0,
        ent_coef: float = 0.0,
        normalize_advantage: bool = True,
        max_grad_norm: float = 1.0,
    ) -> None:
        self.policy, self.baseline = policy, baseline
        self.gamma, self.ent_coef = gamma, ent_coef
        self.normalize_advantage, self.max_grad_norm = normalize_advantage, max_grad_norm
        self.policy_optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
        self.baseline_optimizer = (
            torch.optim.Adam(baseline.parameters(), lr=baseline_lr) if baseline is not None else None
        )

    def state_dict(self) -> dict:
        """The policy, the baseline and their optimizers, for resuming (:meth:`load_state_dict`)."""
        state = {"policy": self.policy.state_dict(), "policy_optimizer": self.policy_optimizer.state_dict()}
        if self.baseline is not None:
            state["baseline"] = self.baseline.state_dict()
            state["baseline_optimizer"] = self.baseline_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if ("baseline" in state) != (self.baseline is not None):
            raise ValueError("The saved learner and this one differ in having a baseline (--baseline).")
        self.policy.load_state_dict(state["policy"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        if self.baseline is not None:
            self.baseline.load_state_dict(state["baseline"])
            self.baseline_optimizer.load_state_dict(state["baseline_optimizer"])

    def losses(self, rollout: Rollout) -> Losses:
        """``L_pi`` and ``L_b`` of a rollout (see the module docstring for the equations).

        Each network sees all ``N`` episodes of a glimpse index in one batched call (the policy once
        per ``t`` because ``step`` may select a per-glimpse offset, the baseline once for all
        ``T * N``); nothing loops over ``N``.
        """
        steps, n = rollout.rewards.shape
        # The rewards come from the env (computed under no_grad): constants, nothing to detach.
        returns = returns_to_go(rollout.rewards, self.gamma)
        log_prob, entropy = self.policy.rollout_terms(rollout.observations, rollout.actions)  # (T, N), scalar
        if self.baseline is not None:
            step_index = torch.arange(steps, device=returns.device).unsqueeze(1).expand(steps, n)
            values = self.baseline(_summary(rollout.observations).flatten(0, 1), step_index.flatten()).view(steps, n)
            baseline_loss = 0.5 * (values - returns).pow(2).mean()
            # detach (decision): the baseline is a control variate, a constant inside the policy
            # gradient; L_pi must neither train b nor reach it through autograd.
            values = values.detach()
            advantages = returns - values
        else:
            baseline_loss, values, advantages = None, None, returns
        normalised = advantages
        if self.normalize_advantage and advantages.numel() > 1:
            normalised = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(normalised * log_prob).mean() - self.ent_coef * entropy
        return Losses(policy_loss, baseline_loss, entropy, returns, values, advantages)

    def update(self, rollout: Rollout) -> UpdateStats:
        """One Adam step of the policy on ``L_pi`` and one of the baseline on ``L_b``."""
        losses = self.losses(rollout)
        self.policy_optimizer.zero_grad(set_to_none=True)
        losses.policy.backward()
        self._clip(self.policy)
        self.policy_optimizer.step()
        explained = float("nan")
        if losses.baseline is not None:
            self.baseline_optimizer.zero_grad(set_to_none=True)
            losses.baseline.backward()
            self._clip(self.baseline)
            self.baseline_optimizer.step()
            # 1 - Var(G - b) / Var(G), with b before this step: the share of the return it explains.
            explained = float(1.0 - losses.advantages.var() / losses.returns.var().clamp_min(1e-12))
        # detach below: the losses are only logged.
        return UpdateStats(
            float(losses.policy.detach()),
            float(losses.baseline.detach()) if losses.baseline is not None else float("nan"),
            float(losses.entropy.detach()),
            float(losses.advantages.std()) if losses.advantages.numel() > 1 else 0.0,
            explained,
        )

    def _clip(self, module: nn.Module) -> None:
        if self.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(module.parameters(), self.max_grad_norm)
