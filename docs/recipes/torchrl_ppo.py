"""TorchRL PPO on the batched environment: ``GymWrapper`` around ``gymnasium.make_vec``, a collector,
GAE and the clipped PPO loss.

    python docs/recipes/torchrl_ppo.py --total-steps 200000

The batched environment goes into TorchRL's ``GymWrapper`` as it comes (``autoreset_mode="same_step"``,
so that TorchRL reads each ended episode's last observation and infos); ``CatTensors`` joins the record
observation's four entries into one vector for the networks. ``check_env_specs`` checks the single
environment (``GymEnv``) and the batched one before training.
"""

import gymnasium as gym
import numpy as np
import torch
from common import parse_args, report, test_accuracy
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import CatTensors, GymEnv, GymWrapper, TransformedEnv, check_env_specs
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

ENV_KWARGS = {"obs_type": "record", "max_glimpses": 25, "device": "cpu"}
KEYS = ["summary", "mask", "pixels", "step"]  # the record's entries, joined in this order
NUM_ENVS, EPOCHS, MINIBATCH = 64, 4, 400


def make_env(num_envs: int) -> TransformedEnv:
    vec = gym.make_vec(
        "MnistGlimpse-v0",
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode="same_step",
        **ENV_KWARGS,
    )
    return TransformedEnv(GymWrapper(vec), CatTensors(in_keys=KEYS, out_key="observation", del_keys=False))


if __name__ == "__main__":
    args = parse_args("Train TorchRL PPO on the batched MnistGlimpse-v0 and print its test accuracy.", 200_000)
    check_env_specs(GymEnv("MnistGlimpse-v0", **ENV_KWARGS))
    env = make_env(NUM_ENVS)
    check_env_specs(env)
    env.set_seed(args.seed)

    size = env.observation_spec["observation"].shape[-1]
    net = nn.Sequential(
        nn.Linear(size, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4), NormalParamExtractor()
    )
    actor = ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=env.action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    critic = ValueOperator(nn.Sequential(nn.Linear(size, 64), nn.Tanh(), nn.Linear(64, 1)), in_keys=["observation"])
    advantage = GAE(gamma=0.99, lmbda=0.95, value_network=critic)
    loss = ClipPPOLoss(actor, critic, entropy_coeff=0.0)
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-4)

    collector = Collector(
        env, actor, frames_per_batch=NUM_ENVS * 25, total_frames=args.total_steps, auto_register_policy_transforms=False
    )
    for data in collector:  # (NUM_ENVS, 25) steps: one episode per environment
        with torch.no_grad():
            advantage(data)
        flat = data.reshape(-1)
        for _ in range(EPOCHS):
            for batch in flat[torch.randperm(len(flat))].split(MINIBATCH):
                losses = loss(batch)
                total = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                optimizer.zero_grad()
                total.backward()
                nn.utils.clip_grad_norm_(loss.parameters(), 0.5)
                optimizer.step()
    collector.shutdown()

    def act(obs, masks):  # the mean action: tanh of the location
        features = torch.as_tensor(np.concatenate([obs[key] for key in KEYS], axis=1))
        return torch.tanh(net(features)[0]).numpy()

    report(args, "torchrl", test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS), ENV_KWARGS)
