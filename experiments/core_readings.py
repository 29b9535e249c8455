"""How well each perception core reads the glimpses of policies that did not train it.

For every core, the accuracy of the prediction the environment observes after each glimpse
``t = 1..T``, on the first ``--images`` test images with the ``nearest`` read-out, under these
glimpse policies:

* ``random continuous``: uniformly random actions in the default action space (numpy generator
  seeded with ``--seed``), through the batched environment;
* ``random pixels``: uniformly random unread pixels (``action_type="pixel"``, a uniform choice among
  the pixels ``action_masks()`` allows), through the batched environment;
* ``settling``: uniformly random continuous actions for the first ``--settle-after`` glimpses, then
  one random place per episode, glimpsed again and again (a policy that stops exploring, as a
  deterministic Gaussian policy may), through the batched environment;
* ``spread sequence``: the same evenly spread locations on every image
  (:func:`agents.baselines.spread_sequence`, where the RL scripts' per-glimpse offsets start), through the
  batched environment;
* ``fixed sequence`` (with ``--fixed-sequence CHECKPOINT``): a learned fixed sequence's locations
  (``python train/differentiable.py --preset fixed-sequence``), through the batched environment;
* ``shipped agent``: the shipped agent's pixels, chosen on its own core and replayed into each core
  (:meth:`~envs.perception.PerceptionCore.replay`, the environment's computation).

With ``--checkpoints``, trained agents (any ``train/`` script's ``checkpoint.pt``) are measured the
same way, each through the environment on the core it carries (:func:`agents.evaluation.accuracy_by_glimpse`).
With ``--first-reads`` as well, each agent's glimpses are read again by that core with every glimpse
into a pixel cell the episode has already read left out (the state stays as it was): what the agent
would score if re-reading a cell brought nothing, and how much of a fall its re-reads explain.

It also reports, per policy, the largest fall of accuracy from one glimpse count to a later one (a
reader that gets worse with more evidence shows a positive fall).

    python experiments/core_readings.py --fixed-sequence runs/fixed-sequence/checkpoint.pt
    python experiments/core_readings.py --cores --checkpoints runs/reinforce/checkpoint.pt runs/ppo/checkpoint.pt

The results: docs/studies/general-core.md (``experiments/results/studies/core_readings.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from agents.baselines import spread_sequence
from agents.checkpoint import load_agent
from agents.cli import plain_text, refuse_retired
from agents.evaluation import accuracy_by_glimpse, agent_glimpses
from agents.shipped import load_shipped_agent
from envs.atomic import write_atomic
from envs.data import load_mnist
from envs.episode import cell_index
from envs.perception import (
    CORE_32X4_PATH,
    PRETRAINED_PATH,
    RANDOM_GLIMPSES_PATH,
    SHIPPED_AGENT_CORE_PATH,
    PerceptionCore,
)
from envs.vector_env import MnistGlimpseVectorEnv

DEFAULT_CORES = (PRETRAINED_PATH, SHIPPED_AGENT_CORE_PATH, CORE_32X4_PATH, RANDOM_GLIMPSES_PATH)


@dataclass
class Args:
    cores: tuple[str, ...] = tuple(str(path) for path in DEFAULT_CORES)
    """perception-core checkpoints to measure"""
    fixed_sequence: str | None = None
    """a fixed-sequence agent's checkpoint (train/differentiable.py --preset fixed-sequence); none: not measured"""
    images: int = 5000
    """the first test images measured"""
    max_glimpses: int = 25
    """glimpses per episode"""
    seed: int = 0
    """seed of the random policies"""
    checkpoints: tuple[str, ...] = ()
    """trained agents to measure, each on its own core"""
    first_reads: bool = False
    """also read each --checkpoints agent's glimpses with the re-reads of a cell left out"""
    settle_after: int = 10
    """the settling policy's random glimpses before it returns to one place"""
    out: str | None = None
    """results JSON (none: print only)"""


def random_policy_accuracy(
    core: PerceptionCore, args: Args, pixel: bool, settle: bool = False, sequence: np.ndarray | None = None
) -> np.ndarray:
    """``(T,)`` accuracy of uniformly random glimpses (continuous, or unread pixels) through the env;
    with ``settle``, continuous glimpses that return to one random place per episode after
    ``args.settle_after``; with ``sequence`` ``(T, 2)``, its location ``t`` on every image instead."""
    env = MnistGlimpseVectorEnv(
        args.images,
        args.max_glimpses,
        split="test",
        sampler="nearest",
        perception=core,
        action_type="pixel" if pixel else "continuous",
        obs_type="record" if pixel else "summary",
    )
    rng = np.random.default_rng(args.seed)
    observation, _ = env.reset(seed=args.seed, options={"index": np.arange(args.images)})
    labels = env.sim.labels.cpu().numpy()
    # where the settling policy returns: its own generator, so that its first glimpses are the random ones
    place = np.random.default_rng([args.seed, 1]).uniform(-1, 1, (args.images, 2)).astype(np.float32)
    accuracy = []
    for t in range(args.max_glimpses):
        if pixel:
            allowed = env.action_masks()
            action = np.argmax(rng.random(allowed.shape) * allowed, axis=1)  # uniform among the allowed
        else:
            action = rng.uniform(-1, 1, (args.images, 2)).astype(np.float32)
            if settle and t >= args.settle_after:
                action = place
            if sequence is not None:
                action = np.repeat(sequence[t : t + 1], args.images, axis=0)
        observation, *_ = env.step(action)
        summary = observation["summary"] if pixel else observation
        accuracy.append(float((summary[:, -10:].argmax(1) == labels).mean()))
    return np.array(accuracy)


def replay_accuracy(
    core: PerceptionCore, coords: torch.Tensor, values: torch.Tensor, labels: torch.Tensor
) -> np.ndarray:
    """``(T,)`` accuracy of ``core`` reading recorded glimpses ``(N, T, 2)``, ``(N, T)``."""
    with torch.no_grad():
        logits = core.replay(coords, values)
    return (logits.argmax(-1) == labels).float().mean(1).numpy()


def first_reads_accuracy(
    core: PerceptionCore, coords: torch.Tensor, values: torch.Tensor, labels: torch.Tensor
) -> tuple[np.ndarray, float]:
    """``(T,)`` accuracy of ``core`` reading recorded glimpses ``(N, T, 2)``, ``(N, T)`` with every
    glimpse into a cell the episode has already read (:func:`envs.episode.cell_index`) left out: the
    histogram stays as it was. Also the share of glimpses that read a new cell."""
    cell = cell_index(coords)  # (N, T)
    earlier = torch.ones(cell.shape[1], cell.shape[1], dtype=torch.bool).tril(-1)  # [t, s]: s < t
    first = ~((cell[:, :, None] == cell[:, None, :]) & earlier).any(-1)  # (N, T)
    with torch.no_grad():
        logits = core.replay(coords, values, keep=first)
    accuracy = (logits.argmax(-1) == labels).float().mean(1).numpy()
    return accuracy, int(first.sum()) / first.numel()


def _budgets(curve: np.ndarray) -> str:
    """Accuracy in % at 1 / 2 / 5 / 10 / 25 glimpses (those the curve reaches)."""
    return " / ".join(f"{100 * curve[t - 1]:.1f}" for t in (1, 2, 5, 10, 25) if t <= len(curve))


def largest_fall(accuracy: np.ndarray) -> float:
    """The largest ``accuracy[s] - accuracy[t]`` over ``s < t`` (0 for a non-decreasing curve)."""
    return float(max(0.0, np.max(np.maximum.accumulate(accuracy) - accuracy)))


def main(args: Args) -> dict:
    torch.set_num_threads(1)
    test = load_mnist("test")
    images, labels = test.images[: args.images], test.labels[: args.images]
    recorded = {}
    if args.cores:
        policy, agent_core, _ = load_shipped_agent()
        recorded["shipped agent"] = agent_glimpses(policy, agent_core, args.max_glimpses, images)
    if args.fixed_sequence and args.cores:
        fixed, fixed_core, _ = load_agent(args.fixed_sequence)
        recorded["fixed sequence"] = agent_glimpses(fixed, fixed_core, args.max_glimpses, images)
    results: dict = {
        "images": args.images,
        "glimpses": args.max_glimpses,
        "readout": "nearest",
        "seed": args.seed,
        "fixed_sequence": args.fixed_sequence,
        "cores": {},
    }
    spread = spread_sequence(args.max_glimpses).numpy().astype(np.float32)
    for path in args.cores:
        core = PerceptionCore.load(path).eval()
        curves = {
            "random continuous": random_policy_accuracy(core, args, pixel=False),
            "random pixels": random_policy_accuracy(core, args, pixel=True),
            "settling": random_policy_accuracy(core, args, pixel=False, settle=True),
            "spread sequence": random_policy_accuracy(core, args, pixel=False, sequence=spread),
        }
        for name, (coords, values) in recorded.items():
            curves[name] = replay_accuracy(core, coords, values, labels)
        name = Path(path).name
        if sum(Path(other).name == name for other in args.cores) > 1:
            name = str(path)  # two cores of one file name: each keyed by its path
        results["cores"][name] = {
            policy_name: {
                "accuracy": [round(float(a), 4) for a in curve],
                "largest_fall": round(largest_fall(curve), 4),
            }
            for policy_name, curve in curves.items()
        }
        for policy_name, curve in curves.items():
            print(f"{name:<32} {policy_name:<18} {_budgets(curve)}   largest fall {100 * largest_fall(curve):.1f}")
    for path in args.checkpoints:
        policy, core, checkpoint = load_agent(path)
        curve = accuracy_by_glimpse(policy, core, checkpoint["glimpses"], limit=args.images).numpy()
        results.setdefault("agents", {})[path] = {
            "accuracy": [round(float(a), 4) for a in curve],
            "largest_fall": round(largest_fall(curve), 4),
        }
        print(f"{path}: {_budgets(curve)}   largest fall {100 * largest_fall(curve):.1f}", flush=True)
        if args.first_reads:
            coords, values = agent_glimpses(policy, core, checkpoint["glimpses"], images)
            curve, share = first_reads_accuracy(core.eval(), coords, values, labels)
            results["agents"][path]["first_reads"] = {
                "accuracy": [round(float(a), 4) for a in curve],
                "largest_fall": round(largest_fall(curve), 4),
                "new_cell_share": round(share, 4),
            }
            print(
                f"{path}, re-reads left out ({100 * share:.0f}% of its glimpses read a new cell): "
                f"{_budgets(curve)}   largest fall {100 * largest_fall(curve):.1f}",
                flush=True,
            )
    if args.out:
        text = json.dumps(results, indent=1) + "\n"
        write_atomic(args.out, lambda handle: handle.write(text.encode()))
        print(f"wrote {args.out}")
    return results


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
}


if __name__ == "__main__":
    main(tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
