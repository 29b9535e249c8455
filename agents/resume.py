"""Stop a training run and continue it exactly: ``OUT/resume.pt``, shared by the training scripts.

A script wraps its loop in a :class:`ResumePoint`. At each step boundary it calls
:meth:`ResumePoint.step` with a function that returns everything an uninterrupted run would still
hold there (weights, optimizers, environment state, counters). That state is written atomically
every ``save_every`` seconds, and when SIGINT or SIGTERM arrives, after which :class:`Interrupted`
is raised (the scripts exit with status 130). The same command with ``--resume`` then restarts from
the file, with the Python, NumPy and torch generators as they were, and reaches the result an
uninterrupted run reaches (the tests compare final weights).

Each run also gets a ``run_id``, kept across ``--resume``, that the scripts write into both its
checkpoint and its ``metrics.json``; :func:`agents.checkpoint.load_agent` refuses a pair from
different runs.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.atomic import write_atomic

#: Arguments that may differ between an interrupted run and its ``--resume``: they change how the run
#: is carried out, not its result.
RESUME_FREE = ("resume", "overwrite", "save_every", "max_train_seconds", "torch_threads", "device", "progress_bar")


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving ``OUT/resume.pt``."""


def random_state() -> dict[str, Any]:
    """The global generators of Python, NumPy and torch (CPU and CUDA)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            **numpy_state,
            "state": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": numpy_state["state"]["pos"],
            },
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restore :func:`random_state`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": state["numpy"]["state"]["key"].numpy().astype(np.uint32),
        "pos": state["numpy"]["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumePoint:
    """The resume file of one run in ``out``; a context manager that catches SIGINT and SIGTERM.

    Built before any work: it refuses an interrupted run in ``out`` unless ``resume`` or ``overwrite``
    is set, and with ``resume`` it loads the file and refuses it if the run was started with other
    arguments (those outside :data:`RESUME_FREE`).

    :param out: the run's output folder.
    :param args: the script's arguments (a dataclass with ``resume``, ``overwrite`` and ``save_every``).
    :param stop_after: act as if interrupted at that step (tests of ``--resume``).
    :ivar state: what the interrupted run saved (``None`` for a fresh run).
    :ivar run_id: this run's id, the interrupted run's when resuming.
    """

    def __init__(self, out: str | Path, args: Any, stop_after: int | None = None) -> None:
        self.path = Path(out) / "resume.pt"
        self.args = vars(args)
        self.save_every = float(args.save_every)
        self.stop_after = stop_after
        self.state: dict[str, Any] | None = None
        if args.overwrite:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file() and not args.resume:
            raise FileExistsError(
                f"{out} holds an interrupted run ({self.path}): pass --resume to continue it, "
                "or --overwrite to start again."
            )
        if args.resume:
            self.state = self._load()
        self.run_id = self.state["run_id"] if self.state else uuid.uuid4().hex[:16]
        self._signals: list[int] = []
        self._handlers: dict[int, Any] = {}
        self._last_save = time.time()

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise ValueError(
                f"--resume: {self.path} not found; {self.path.parent} holds no interrupted run (drop --resume)."
            )
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            missing = [key for key in ("args", "run_id", "step", "random", "run") if key not in state]
            if missing:
                raise KeyError(f"no {missing}")
            saved = state["args"]
        except Exception as error:  # a damaged file: torch raises many types
            raise ValueError(
                f"--resume: {self.path} is damaged ({type(error).__name__}: {error}); start again with --overwrite."
            ) from None
        changed = sorted(k for k, v in self.args.items() if k not in RESUME_FREE and saved.get(k) != v)
        if changed:
            raise ValueError(
                f"--resume: the run in {self.path.parent} was started with other values of {changed} "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); pass those, or start again with --overwrite."
            )
        return state

    def restore(self) -> dict[str, Any] | None:
        """The saved run's own state (the ``run`` entry), after restoring the global generators;
        ``None`` for a fresh run."""
        if self.state is None:
            return None
        set_random_state(self.state["random"])
        print(f"resuming {self.path.parent} at step {self.state['step']}", flush=True)
        return self.state["run"]

    def save(self, step: int, run: dict[str, Any]) -> None:
        """Write ``OUT/resume.pt`` atomically: ``run`` plus the arguments, the step and the generators."""
        state = {"args": self.args, "run_id": self.run_id, "step": step, "random": random_state(), "run": run}
        write_atomic(self.path, lambda handle: torch.save(state, handle))
        self._last_save = time.time()

    def step(self, step: int, run: Callable[[], dict[str, Any]]) -> None:
        """Call at a step boundary (``step`` steps done). Saves ``run()`` when ``save_every`` seconds
        have passed; on a caught signal (or at ``stop_after``) saves it and raises :class:`Interrupted`."""
        if self._signals or (self.stop_after is not None and step >= self.stop_after):
            self.save(step, run())
            print(f"interrupted: saved {self.path}; continue with the same command and --resume", flush=True)
            raise Interrupted
        if time.time() - self._last_save > self.save_every:
            self.save(step, run())

    def finish(self) -> None:
        """The run is written: nothing is left to resume."""
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ResumePoint:
        self._handlers = {
            s: signal.signal(s, lambda signum, _: self._signals.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:  # also when a step raises: the caller's handlers come back
        for s, handler in self._handlers.items():
            signal.signal(s, handler)
        self._handlers = {}
