"""RLlib PPO (new API stack) on the record observation, flattened by RLlib's ``FlattenObservations``
connector.

    python docs/recipes/rllib_ppo.py --total-steps 50000

``register_env`` names a creator that makes the environment from its ``env_config``; RLlib's default
networks take a flat vector, so the env-to-module connector flattens the record's ``Dict`` (its entries
in sorted key order). ``num_env_runners=0`` samples in this process.
"""

import gymnasium as gym
import numpy as np
import torch
from common import parse_args, report, test_accuracy
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.connectors.env_to_module import FlattenObservations
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.tune.registry import register_env

ENV_KWARGS = {"obs_type": "record", "max_glimpses": 25, "device": "cpu"}

if __name__ == "__main__":
    args = parse_args("Train RLlib PPO on MnistGlimpse-v0 (record observation) and print its test accuracy.", 50_000)
    register_env("mnist_glimpse", lambda config: gym.make("MnistGlimpse-v0", **config))
    config = (
        PPOConfig()
        .environment("mnist_glimpse", env_config=ENV_KWARGS)
        .env_runners(
            num_env_runners=0, env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations()
        )
        .training(train_batch_size_per_learner=2000, minibatch_size=200, num_epochs=5, lr=3e-4)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    steps = 0
    while steps < args.total_steps:
        steps = algo.train()["env_runners"]["num_env_steps_sampled_lifetime"]
    module = algo.get_module()

    def act(obs, masks):  # the mean action, on the observation flattened as the connector does
        flat = torch.as_tensor(np.concatenate([obs[key] for key in sorted(obs)], axis=1))
        mean = module.forward_inference({"obs": flat})["action_dist_inputs"][:, :2]
        return mean.clamp(-1, 1).numpy()

    accuracy = test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS)
    algo.stop()
    report(args, "ray", accuracy, ENV_KWARGS)
