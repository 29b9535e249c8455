"""tianshou PPO on single environments in a ``DummyVectorEnv``, the record observation flattened by
Gymnasium's ``FlattenObservation``.

    python docs/recipes/tianshou_ppo.py --total-steps 100000

tianshou's networks take a flat vector: ``gymnasium.wrappers.FlattenObservation`` joins the record's
entries (in the ``Dict`` space's sorted key order). A Gaussian actor (means bounded by ``tanh``) and a
critic, each a small MLP; tianshou's on-policy trainer collects and updates.
"""

import gymnasium as gym
import numpy as np
import torch
from common import parse_args, report, test_accuracy
from tianshou.algorithm import PPO
from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OnPolicyTrainerParams
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
from torch.distributions import Independent, Normal

ENV_KWARGS = {"obs_type": "record", "max_glimpses": 25, "device": "cpu"}
NUM_ENVS = 8


def make_env() -> gym.Env:
    return gym.wrappers.FlattenObservation(gym.make("MnistGlimpse-v0", **ENV_KWARGS))


if __name__ == "__main__":
    args = parse_args(
        "Train tianshou PPO on MnistGlimpse-v0 (record observation) and print its test accuracy.", 100_000
    )
    envs = DummyVectorEnv([make_env for _ in range(NUM_ENVS)])
    envs.seed(args.seed)
    space = make_env()
    size = space.observation_space.shape[0]
    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=size, hidden_sizes=(64, 64), activation=torch.nn.Tanh), action_shape=2
    )
    critic = ContinuousCritic(preprocess_net=Net(state_shape=size, hidden_sizes=(64, 64), activation=torch.nn.Tanh))
    policy = ProbabilisticActorPolicy(
        actor=actor,
        dist_fn=lambda loc_scale: Independent(Normal(*loc_scale), 1),
        action_space=space.action_space,
        deterministic_eval=True,
    )
    algorithm = PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=3e-4), ent_coef=0.0)
    collector = Collector(algorithm, envs, VectorReplayBuffer(2000, NUM_ENVS))
    algorithm.run_training(
        OnPolicyTrainerParams(
            training_collector=collector,
            max_epochs=1,
            epoch_num_steps=args.total_steps,
            collection_step_num_env_steps=2000,
            update_step_num_repetitions=4,
            batch_size=200,
            show_progress=False,
            verbose=False,
        )
    )

    def act(obs, masks):  # the mean action, on the record flattened as FlattenObservation does
        flat = torch.as_tensor(np.concatenate([obs[key] for key in sorted(obs)], axis=1))
        return actor(flat)[0][0].clamp(-1, 1).numpy()

    report(args, "tianshou", test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS), ENV_KWARGS)
