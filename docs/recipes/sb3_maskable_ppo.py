"""sb3-contrib MaskablePPO on the record observation with pixel actions, masked to the unread pixels.

    python docs/recipes/sb3_maskable_ppo.py --total-steps 200000

``action_type="pixel"`` makes the action ``Discrete(784)`` (one pixel per glimpse) and gives the
environment an ``action_masks()`` method (``False`` at the pixels already read), which MaskablePPO
calls at every step; at test time the same masks go to ``predict``.
"""

from common import parse_args, report, test_accuracy
from sb3_contrib import MaskablePPO

from envs.sb3 import MnistGlimpseSB3VecEnv

ENV_KWARGS = {"obs_type": "record", "action_type": "pixel"}

if __name__ == "__main__":
    args = parse_args("Train sb3-contrib MaskablePPO (pixel actions, masked) on MnistGlimpse-v0.", 200_000)
    env = MnistGlimpseSB3VecEnv(num_envs=8, max_glimpses=25, device="cpu", **ENV_KWARGS)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=256, seed=args.seed)  # 8 x 256 = the default 2048
    model.learn(total_timesteps=args.total_steps)

    def act(obs, masks):
        return model.predict(obs, action_masks=masks, deterministic=True)[0]

    report(args, "sb3_contrib", test_accuracy(act, args.test_images, args.seed, **ENV_KWARGS), ENV_KWARGS)
