"""A short look at ``MnistGlimpse-v0``: a few test-set episodes with uniformly random glimpses.

Prints, per episode, the label, every glimpse's ``(i, j)`` and sampled value, and the final
prediction; saves the last episode's rendered glimpse trail as a PNG.

    python train/demo.py --episodes 3 --seed 0 --out runs/demo/glimpse_trail.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium
import numpy as np
import tyro
from PIL import Image

import envs


@dataclass
class Args:
    episodes: int = 3
    """number of episodes to run"""
    seed: int = 0
    """seeds the first reset (image choice) and the random glimpses"""
    max_glimpses: int = 25
    """glimpses per episode"""
    out: Path = Path("runs/demo/glimpse_trail.png")
    """where to save the last episode's rendered glimpse trail"""


def main(args: Args) -> None:
    gymnasium.register_envs(envs)
    env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=args.max_glimpses, render_mode="rgb_array")
    env.action_space.seed(args.seed)
    correct = 0
    for episode in range(args.episodes):
        _, info = env.reset(seed=args.seed if episode == 0 else None)
        print(f"episode {episode + 1}: test image {info['index']}")
        terminated = truncated = False
        while not (terminated or truncated):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            i, j = info["glimpse"]
            print(f"  glimpse ({i:5.2f}, {j:5.2f})  value {info['value']:.3f}  reward {reward:+.3f}")
        prediction = int(np.argmax(info["prediction"]))
        correct += info["correct"]
        print(
            f"  label {info['label']}, prediction {prediction} (p={info['prediction'][prediction]:.2f}): "
            f"{'correct' if info['correct'] else 'wrong'}\n"
        )
    print(f"{correct}/{args.episodes} correct with random glimpses")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(env.render()).save(args.out)
    print(f"saved the last episode's glimpse trail to {args.out}")
    env.close()


if __name__ == "__main__":
    main(tyro.cli(Args))
