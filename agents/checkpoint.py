"""Agent checkpoints: the policy and the perception core it was trained with, in one file.

``{"format", "agent", "glimpses", "policy": {"kind", "module", "config", "state_dict"}, "core": <core
checkpoint>, **extra, "digest"}``, tensors on the CPU, so a checkpoint written on a GPU loads anywhere.
The digest (:mod:`envs.digest`) covers everything else in the file and is checked at load: a file
changed since it was written (one flipped bit in a weight) is refused. Checkpoints written before
digests existed carry none and load as they are.

Every policy class that can be saved derives from :class:`SavedPolicy` and declares its
``checkpoint_kind``; the loader imports the module the record names (only modules of the ``agents``
package) and looks the kind up in the registry those classes fill. So this module imports no policy,
and a checkpoint of one kind never imports another kind's dependencies (e.g. stable-baselines3).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from envs.atomic import write_atomic
from envs.digest import check_digest, with_digest
from envs.perception import PerceptionCore, non_finite

AGENT_FORMAT = "mnist-glimpse/agent/v1"

#: A checkpoint config's key -> the constructor argument it is passed as, where the two differ: the
#: file format's ``glimpses`` (a policy's episode length, in every saved checkpoint) is ``max_glimpses``.
CONFIG_ARGUMENTS = {"glimpses": "max_glimpses"}

#: checkpoint kind -> policy class, filled by :class:`SavedPolicy` subclasses as they are defined.
_REGISTRY: dict[str, type[SavedPolicy]] = {}


class SavedPolicy:
    """Mixin of a policy class that agent checkpoints save and rebuild.

    A subclass sets ``checkpoint_kind`` (unique) and implements :meth:`checkpoint_config`, the
    arguments that :meth:`from_checkpoint_config` rebuilds it from (``cls(**config)`` by default, each
    key named as :data:`CONFIG_ARGUMENTS` says); the weights travel separately, as its ``state_dict``.
    """

    checkpoint_kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("checkpoint_kind")
        if kind is None:
            return
        known = _REGISTRY.get(kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(
                f"checkpoint kind {kind!r} is taken by {known.__module__}.{known.__qualname__}; "
                f"give {cls.__qualname__} another checkpoint_kind."
            )
        _REGISTRY[kind] = cls

    def checkpoint_config(self) -> dict[str, Any]:
        """The arguments that rebuild this policy (JSON-like values only)."""
        raise NotImplementedError(f"{type(self).__name__} must implement checkpoint_config() to be saved.")

    @classmethod
    def from_checkpoint_config(cls, config: dict[str, Any]) -> SavedPolicy:
        """A freshly initialised policy of the shape ``config`` describes (its weights are loaded next)."""
        return cls(**{CONFIG_ARGUMENTS.get(key, key): value for key, value in config.items()})


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in state.items()}


def policy_entry(policy: nn.Module) -> dict[str, Any]:
    """The ``policy`` entry of an agent checkpoint."""
    if not isinstance(policy, SavedPolicy):
        raise TypeError(
            f"Cannot save a policy of type {type(policy).__name__}: it does not derive from "
            "agents.checkpoint.SavedPolicy (set checkpoint_kind and implement checkpoint_config)."
        )
    return {
        "kind": policy.checkpoint_kind,
        "module": type(policy).__module__,
        "config": policy.checkpoint_config(),
        "state_dict": _cpu(policy.state_dict()),
    }


def save_agent(
    path: str | os.PathLike, agent: str, policy: nn.Module, core: PerceptionCore, max_glimpses: int, **extra: Any
) -> None:
    """Save ``policy`` and ``core`` to ``path`` (parents created), atomically (:mod:`envs.atomic`), with
    the digest of the contents that :func:`load_agent` checks."""
    checkpoint = with_digest(
        {
            "format": AGENT_FORMAT,
            "agent": agent,
            "glimpses": max_glimpses,
            "policy": policy_entry(policy),
            "core": core.checkpoint(),
            **extra,
        }
    )
    write_atomic(path, lambda handle: torch.save(checkpoint, handle))  # never a half-written checkpoint


def _policy_class(entry: dict[str, Any], path: Path) -> type[SavedPolicy]:
    module = entry.get("module")
    if isinstance(module, str) and module.split(".")[0] == "agents":  # never import what a file names elsewhere
        importlib.import_module(module)
    kind = entry.get("kind")
    if kind not in _REGISTRY:
        raise ValueError(
            f"{path} holds a policy of unknown kind {kind!r}; known kinds are {sorted(_REGISTRY)} "
            "(import the module that defines it before loading)."
        )
    return _REGISTRY[kind]


def check_same_run(path: Path, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint whose folder's ``metrics.json`` was written by another run: the training
    scripts stamp both files with the same ``run_id`` (``ResumePoint`` of train/run.py)."""
    metrics_path = path.parent / "metrics.json"
    if "run_id" not in checkpoint or not metrics_path.is_file():
        return
    try:
        metrics_id = json.loads(metrics_path.read_text()).get("run_id")
    except (ValueError, AttributeError):
        raise ValueError(f"{metrics_path} is not valid metrics JSON; rerun the training with --overwrite.") from None
    if metrics_id is not None and metrics_id != checkpoint["run_id"]:
        raise ValueError(
            f"{path} and {metrics_path} come from different runs (run_id {checkpoint['run_id']} against "
            f"{metrics_id}): the folder mixes two trainings. Rerun the training with --overwrite."
        )


def load_agent(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, PerceptionCore, dict]:
    """Load ``(policy, core, checkpoint)`` from a file written by :func:`save_agent`, onto ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Agent checkpoint {path} not found; train one with a train/ script (it writes DIR/checkpoint.pt)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint (empty, cut, ...)
        raise ValueError(
            f"{path} is not an agent checkpoint ({type(error).__name__}: {error}); retrain it with a train/ script."
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != AGENT_FORMAT:
        raise ValueError(f"{path} is not an agent checkpoint (expected format {AGENT_FORMAT!r}).")
    missing = [key for key in ("core", "policy", "glimpses") if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is an agent checkpoint missing {missing}; retrain it with a train/ script.")
    check_digest(checkpoint, str(path))
    check_same_run(path, checkpoint)
    core = PerceptionCore.from_checkpoint(checkpoint["core"], source=f"{path} (core)").to(device).eval()
    entry = checkpoint["policy"]
    broken = non_finite(entry["state_dict"])
    if broken:
        raise ValueError(f"{path}: the policy holds non-finite (NaN or inf) weights in {broken}; retrain it.")
    policy = _policy_class(entry, path).from_checkpoint_config(entry["config"])
    try:
        policy.load_state_dict(entry["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the saved policy does not match its config: {error}") from None
    return policy.to(device).eval(), core, checkpoint
