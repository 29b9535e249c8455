"""skrl PPO on the batched environment with the record observation (skrl flattens the ``Dict`` itself).

    python docs/recipes/skrl_ppo.py --total-steps 100000

``wrap_env`` takes the batched environment as a Gymnasium vector environment (``autoreset_mode="same_step"``:
the observation after an episode's last step is the next episode's first, as skrl's rollouts expect) and
flattens the record's entries in sorted key order. A Gaussian policy and a value network, each a small MLP.
"""

import gymnasium as gym
import numpy as np
import torch
from common import parse_args, report, test_accuracy
from skrl.agents.torch import ExperimentCfg
from skrl.agents.torch.ppo import PPO, PPO_CFG
from skrl.envs.wrappers.torch import wrap_env
from skrl.memories.torch import RandomMemory
from skrl.models.torch import DeterministicMixin, GaussianMixin, Model
from skrl.trainers.torch import SequentialTrainer
from skrl.utils import set_seed
from torch import nn

ENV_KWARGS = {"obs_type": "record", "max_glimpses": 25, "device": "cpu"}
NUM_ENVS = 64


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, outputs))


class Policy(GaussianMixin, Model):
    def __init__(self, observation_space, action_space, device):
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
        GaussianMixin.__init__(self, clip_actions=True)
        self.net = mlp(self.num_observations, self.num_actions)
        self.log_std = nn.Parameter(torch.zeros(self.num_actions))

    def compute(self, inputs, role=""):
        return self.net(inputs["observations"]), {"log_std": self.log_std}


class Value(DeterministicMixin, Model):
    def __init__(self, observation_space, action_space, device):
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
        DeterministicMixin.__init__(self)
        self.net = mlp(self.num_observations, 1)

    def compute(self, inputs, role=""):
        return self.net(inputs["observations"]), {}


if __name__ == "__main__":
    args = parse_args("Train skrl PPO on the batched MnistGlimpse-v0 and print its test accuracy.", 100_000)
    set_seed(args.seed)
    vec = gym.make_vec(
        "MnistGlimpse-v0",
        num_envs=NUM_ENVS,
        vectorization_mode="vector_entry_point",
        autoreset_mode="same_step",
        **ENV_KWARGS,
    )
    env = wrap_env(vec, wrapper="gymnasium")
    models = {
        name: cls(env.observation_space, env.action_space, "cpu")
        for name, cls in (("policy", Policy), ("value", Value))
    }
    cfg = PPO_CFG(
        rollouts=25,  # one episode per environment between updates
        learning_epochs=4,
        mini_batches=4,
        learning_rate=3e-4,
        experiment=ExperimentCfg(write_interval=0, checkpoint_interval=0),  # no TensorBoard files, no checkpoints
    )
    memory = RandomMemory(memory_size=25, num_envs=NUM_ENVS, device="cpu")
    agent = PPO(
        models=models,
        memory=memory,
        observation_space=env.observation_space,
        action_space=env.action_space,
        device="cpu",
        cfg=cfg,
    )
    trainer = SequentialTrainer(
        env=env,
        agents=agent,
        cfg={"timesteps": args.total_steps // NUM_ENVS, "disable_progressbar": True, "headless": True},
    )
    trainer.train()

    def act(obs, masks):  # the mean action, on the record flattened as skrl does (entries in sorted key order)
        flat = torch.as_tensor(np.concatenate([obs[key] for key in sorted(obs)], axis=1))
        return models["policy"].net(flat).clamp(-1, 1).numpy()

    report(args, "skrl", test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS), ENV_KWARGS)
