"""A short look at ``MnistGlimpse-v0``: a few test-set episodes of the trained agent that ships with
the package (:mod:`agents.shipped`), or of uniformly random glimpses.

Prints, per episode, the label, every glimpse's ``(i, j)`` and sampled value, and the final
prediction; saves each episode's rendered glimpse trail as a PNG.

    python train/demo.py --episodes 3 --seed 0 --out runs/demo
    python train/demo.py --policy random
    python train/demo.py --figure experiments/results/figures/best_glimpses.png   # the README's figure

With ``--figure PATH`` it also draws the shipped agent on the first test image of each digit, with
its guess after each glimpse, to ``PATH`` (:func:`agents.figures.plot_glimpse_trails`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium
import numpy as np
import tyro
from PIL import Image

import envs
from agents.cli import plain_text, run_main
from agents.shipped import ENV_KWARGS, act, load_shipped_agent


@dataclass
class Args:
    policy: Literal["shipped", "random"] = "shipped"
    """shipped: the trained agent of envs/pretrained/agent.pt; random: uniformly random glimpses"""
    episodes: int = 3
    """number of episodes to run"""
    seed: int = 0
    """seeds the first reset (image choice) and the random glimpses"""
    max_glimpses: int = 25
    """glimpses per episode"""
    out: Path = Path("runs/demo")
    """folder of the episodes' rendered glimpse trails (episode<k>.png)"""
    figure: Path | None = None
    """also draw the shipped agent on one test image of each digit to this PNG (none: no figure)"""


def main(args: Args) -> None:
    gymnasium.register_envs(envs)
    kwargs = dict(split="test", max_glimpses=args.max_glimpses, render_mode="rgb_array")
    if args.policy == "shipped":
        policy, _, _ = load_shipped_agent()
        env = gymnasium.make("MnistGlimpse-v0", **ENV_KWARGS, **kwargs)  # on the agent's own core
        print("the shipped agent, on its own core (agents.shipped.ENV_KWARGS)")
    else:
        env = gymnasium.make("MnistGlimpse-v0", **kwargs)
        env.action_space.seed(args.seed)
        print("uniformly random glimpses, on the packaged general core")
    args.out.mkdir(parents=True, exist_ok=True)
    correct = 0
    for episode in range(args.episodes):
        observation, info = env.reset(seed=args.seed if episode == 0 else None)
        print(f"episode {episode + 1}: test image {info['index']}")
        for step in range(args.max_glimpses):
            action = act(policy, observation, step) if args.policy == "shipped" else env.action_space.sample()
            observation, reward, terminated, _, info = env.step(action)
            i, j = info["glimpse"]
            print(f"  glimpse ({i:5.2f}, {j:5.2f})  value {info['value']:.3f}  reward {reward:+.3f}")
        prediction = int(np.argmax(info["prediction"]))
        correct += info["correct"]
        print(
            f"  label {info['label']}, prediction {prediction} (p={info['prediction'][prediction]:.2f}): "
            f"{'correct' if info['correct'] else 'wrong'}"
        )
        Image.fromarray(env.render()).save(args.out / f"episode{episode + 1}.png")
    what = "the shipped agent" if args.policy == "shipped" else "random glimpses"
    print(f"{correct}/{args.episodes} correct with {what}; glimpse trails in {args.out}/episode*.png")
    env.close()
    if args.figure is not None:
        from agents.figures import plot_glimpse_trails  # matplotlib only for the figure

        policy, core, _ = load_shipped_agent()
        plot_glimpse_trails(policy, core, args.max_glimpses, args.figure)
        print(f"the shipped agent on one test image of each digit: {args.figure}")


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
