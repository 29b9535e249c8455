"""A CleanRL-style single-file PPO on the batched environment, torch tensors in and out.

    python docs/recipes/cleanrl_ppo.py --total-steps 200000

One ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point", array_type="torch")`` runs all the
episodes as one batch with no numpy round trips; ``autoreset_mode="same_step"`` makes every step a real
transition (the observation after an episode's last step is the next episode's first). The record
observation's entries are joined into one vector (sorted key order); a Gaussian policy over the glimpse
location, GAE, the clipped objective.
"""

import gymnasium as gym
import torch
from common import parse_args, report, test_accuracy
from torch import nn

ENV_KWARGS = {"obs_type": "record", "max_glimpses": 25, "device": "cpu"}
NUM_ENVS, NUM_STEPS = 64, 25  # one episode per environment per rollout
EPOCHS, MINIBATCHES, LR, GAMMA, LAMBDA, CLIP = 4, 4, 3e-4, 0.99, 0.95, 0.2


def flat(obs: dict) -> torch.Tensor:
    return torch.cat([torch.as_tensor(obs[key], dtype=torch.float32) for key in sorted(obs)], dim=1)


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, outputs))


if __name__ == "__main__":
    args = parse_args("Train a CleanRL-style single-file PPO on the batched MnistGlimpse-v0.", 200_000)
    vec = gym.make_vec(
        "MnistGlimpse-v0",
        num_envs=NUM_ENVS,
        vectorization_mode="vector_entry_point",
        autoreset_mode="same_step",
        array_type="torch",
        **ENV_KWARGS,
    )
    obs, _ = vec.reset(seed=args.seed)
    size = flat(obs).shape[1]
    actor, critic, log_std = mlp(size, 2), mlp(size, 1), nn.Parameter(torch.full((2,), -0.5))
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters(), log_std], lr=LR, eps=1e-5)

    for _ in range(max(1, args.total_steps // (NUM_ENVS * NUM_STEPS))):
        observations, actions, log_probs, rewards, dones, values = [], [], [], [], [], []
        with torch.no_grad():
            for _ in range(NUM_STEPS):
                x = flat(obs)
                dist = torch.distributions.Normal(actor(x), log_std.exp())
                action = dist.sample()
                obs, reward, terminated, truncated, _ = vec.step(action.clamp(-1, 1))
                observations.append(x), actions.append(action), log_probs.append(dist.log_prob(action).sum(1))
                rewards.append(reward), dones.append((terminated | truncated).float()), values.append(critic(x)[:, 0])
            next_value = critic(flat(obs))[:, 0]
            advantages, last = torch.zeros(NUM_STEPS, NUM_ENVS), torch.zeros(NUM_ENVS)
            for t in reversed(range(NUM_STEPS)):  # GAE; a done step does not bootstrap from the next episode
                following = next_value if t == NUM_STEPS - 1 else values[t + 1]
                delta = rewards[t] + GAMMA * following * (1 - dones[t]) - values[t]
                advantages[t] = last = delta + GAMMA * LAMBDA * (1 - dones[t]) * last
            returns = advantages + torch.stack(values)
        b_obs, b_actions = torch.cat(observations), torch.cat(actions)
        b_log_probs, b_adv, b_returns = torch.cat(log_probs), advantages.reshape(-1), returns.reshape(-1)
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(b_obs)).chunk(MINIBATCHES):
                dist = torch.distributions.Normal(actor(b_obs[batch]), log_std.exp())
                ratio = (dist.log_prob(b_actions[batch]).sum(1) - b_log_probs[batch]).exp()
                adv = (b_adv[batch] - b_adv[batch].mean()) / (b_adv[batch].std() + 1e-8)
                policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - CLIP, 1 + CLIP)).mean()
                value_loss = 0.5 * (critic(b_obs[batch])[:, 0] - b_returns[batch]).pow(2).mean()
                optimizer.zero_grad()
                (policy_loss + 0.5 * value_loss).backward()
                nn.utils.clip_grad_norm_([*actor.parameters(), *critic.parameters(), log_std], 0.5)
                optimizer.step()

    def act(obs, masks):  # the mean action
        return actor(flat(obs)).clamp(-1, 1).numpy()

    report(args, "torch", test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS), ENV_KWARGS)
