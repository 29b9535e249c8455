"""The reference the recipes' figures compare with: a uniformly random policy, no training.

    python docs/recipes/random_policy.py --action-type continuous   # a random location per glimpse
    python docs/recipes/random_policy.py --action-type pixel        # a random pixel not read yet

Scored as every recipe is (``common.test_accuracy``), on the record observation that the recipes train on.
"""

import numpy as np
from common import parse_args, report, test_accuracy

if __name__ == "__main__":
    args = parse_args(
        "Score a uniformly random policy on MnistGlimpse-v0 (no training).",
        0,
        lambda parser: parser.add_argument("--action-type", choices=["continuous", "pixel"], default="continuous"),
    )
    env_kwargs = {"obs_type": "record", **({"action_type": "pixel"} if args.action_type == "pixel" else {})}
    rng = np.random.default_rng(args.seed)

    def act(obs, masks):
        if masks is None:
            return rng.uniform(-1, 1, size=(len(obs["step"]), 2)).astype(np.float32)
        scores = np.where(masks, rng.random(masks.shape), -1.0)  # the largest of uniform scores among the unread
        return scores.argmax(axis=1)

    report(args, "numpy", test_accuracy(act, args.test_images, args.seed, **env_kwargs), env_kwargs)
