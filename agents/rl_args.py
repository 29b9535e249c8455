"""Checks shared by the RL training scripts (train/reinforce.py, train/ppo.py), run before any work."""

from __future__ import annotations

from typing import Any

from agents.cli import UserValueError


def check_rl_args(args: Any, default_perception_lr: float) -> None:
    """Refuse empty budgets and a perception learning rate that a frozen core would ignore.

    :param args: the script's ``Args`` (``num_envs``, ``total_steps``, ``eval_images``, ``glimpses``,
        ``core_training``, ``perception_lr``).
    :param default_perception_lr: the script's default ``perception_lr``.
    """
    for name in ("num_envs", "total_steps", "eval_images", "glimpses"):
        if getattr(args, name) < 1:
            raise UserValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.core_training == "frozen" and args.perception_lr != default_perception_lr:
        raise UserValueError(
            f"--perception-lr {args.perception_lr} trains the core; pass --core-training joint, or drop it."
        )


def refuse_with_pixel_actions(args: Any, names: tuple[str, ...]) -> None:
    """With ``--action-type pixel``, refuse the Gaussian policy's options ``names`` set away from their
    defaults: nothing reads them there.

    :param args: the script's ``Args`` (``action_type`` and ``names``; its class gives the defaults).
    """
    if args.action_type != "pixel":
        return
    defaults = type(args)()
    for name in names:
        if getattr(args, name) != getattr(defaults, name):
            raise UserValueError(
                f"--{name.replace('_', '-')} is an option of the Gaussian policy (--action-type continuous); "
                "with --action-type pixel nothing reads it. Drop it."
            )
