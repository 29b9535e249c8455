"""Stable-Baselines3 PPO on the record observation with continuous glimpse locations.

    python docs/recipes/sb3_ppo.py --total-steps 200000

SB3's ``MultiInputPolicy`` reads the record (``obs_type="record"``: the pixels read so far and the glimpse
count) as it comes; ``envs.sb3.MnistGlimpseSB3VecEnv`` runs the episodes as one batch behind SB3's
``VecEnv`` API (``gymnasium.make("MnistGlimpse-v0", obs_type="record")`` in ``PPO(...)`` works too,
one episode at a time).
"""

from common import parse_args, report, test_accuracy
from stable_baselines3 import PPO

from envs.sb3 import MnistGlimpseSB3VecEnv

ENV_KWARGS = {"obs_type": "record"}

if __name__ == "__main__":
    args = parse_args("Train SB3 PPO on MnistGlimpse-v0 (record observation) and print its test accuracy.", 200_000)
    env = MnistGlimpseSB3VecEnv(num_envs=8, max_glimpses=25, device="cpu", **ENV_KWARGS)
    model = PPO("MultiInputPolicy", env, n_steps=256, seed=args.seed)  # 8 x 256 = SB3's default 2048 per rollout
    model.learn(total_timesteps=args.total_steps)

    def act(obs, masks):
        return model.predict(obs, deterministic=True)[0]

    report(args, "stable_baselines3", test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS), ENV_KWARGS)
