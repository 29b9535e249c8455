"""Stop a training run and continue it exactly: ``OUT/resume.pt``, shared by the training scripts.

A script wraps its run, from its training loop to its last write, in a :class:`ResumePoint`. At each
step boundary it calls :meth:`ResumePoint.step` with a function that returns everything an
uninterrupted run would still hold there (weights, optimizers, environment state, counters). That
state is written atomically every ``save_every`` seconds, and when SIGINT or SIGTERM arrives, after
which :class:`Interrupted` is raised (the scripts exit with status 130). When training is over,
:meth:`ResumePoint.final` saves the trained state before the final evaluation, the writes and the
figure, and from then on a signal stops the run at once; :meth:`ResumePoint.finish` writes the file
that marks the run finished (``metrics.json``) and removes ``resume.pt`` as one step that no signal
splits. So a signal at any point after training started leaves a finished run or a resumable one.
The same command with ``--resume`` then restarts from the file, with the Python, NumPy and torch
generators as they were, and reaches the result an uninterrupted run reaches (the tests compare
final weights and metrics).

The file carries a digest of its contents (:mod:`envs.digest`), checked by ``--resume``. The run owns
its output folder from the start (:func:`agents.output.lock_output`): a second run into it is refused.

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
from typing import Any, TypeVar

import numpy as np
import torch

from agents.cli import UserFileExistsError, UserValueError
from agents.output import lock_output, release_output
from envs.atomic import write_atomic
from envs.digest import check_digest, with_digest

T = TypeVar("T")

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
        self.out = Path(out)
        self.path = self.out / "resume.pt"
        self.args = vars(args)
        self.save_every = float(args.save_every)
        self.stop_after = stop_after
        self.state: dict[str, Any] | None = None
        for owned in (False, True):  # refused before anything changes, and again once the folder is ours
            if args.resume and not self.path.is_file():
                raise UserValueError(
                    f"--resume: {self.path} not found; {out} holds no interrupted run (drop --resume)."
                )
            if self.path.is_file() and not args.resume and not args.overwrite:
                raise UserFileExistsError(
                    f"{out} holds an interrupted run ({self.path}): pass --resume to continue it "
                    "(make train ARGS=--resume), or --overwrite to start again (make train ARGS=--overwrite)."
                )
            if not owned:
                lock_output(out)  # a second live run into the folder is refused here
        if args.overwrite and not args.resume:
            self.path.unlink(missing_ok=True)
        if args.resume:
            self.state = self._load()
        self.run_id = self.state["run_id"] if self.state else uuid.uuid4().hex[:16]
        self._signals: list[int] = []
        self._handlers: dict[int, Any] = {}
        self._last_save = time.time()
        self._final = False  # training is over: a signal stops the run at once
        self._committing = False  # finish() is writing: a signal waits until it is done

    def _load(self) -> dict[str, Any]:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            missing = [key for key in ("args", "run_id", "step", "random", "run") if key not in state]
            if missing:
                raise KeyError(f"no {missing}")
            saved = state["args"]
        except Exception as error:  # a damaged file: torch raises many types
            raise UserValueError(
                f"--resume: {self.path} is damaged ({type(error).__name__}: {error}); start again with --overwrite."
            ) from None
        try:
            check_digest(state, str(self.path))
        except ValueError as error:
            raise UserValueError(f"--resume: {error} Or start again with --overwrite.") from None
        changed = sorted(k for k, v in self.args.items() if k not in RESUME_FREE and saved.get(k) != v)
        if changed:
            raise UserValueError(
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
        state = with_digest(state)
        write_atomic(self.path, lambda handle: torch.save(state, handle))
        self._last_save = time.time()

    def step(self, step: int, run: Callable[[], dict[str, Any]]) -> None:
        """Call at a step boundary (``step`` steps done). Saves ``run()`` when ``save_every`` seconds
        have passed; on a caught signal (or at ``stop_after``) saves it and raises :class:`Interrupted`."""
        if self._signals or (self.stop_after is not None and step >= self.stop_after):
            self.save(step, run())
            self._stop()
        if time.time() - self._last_save > self.save_every:
            self.save(step, run())

    def final(self, step: int, run: Callable[[], dict[str, Any]]) -> None:
        """Call when training is over, inside the ``with`` block, before the final evaluation and the
        writes: saves ``run()`` (so that ``--resume`` goes straight to the evaluation), and from then on
        a signal stops the run at once, raising :class:`Interrupted` wherever it arrives.

        :param step: the steps done (all of them).
        :param run: returns the trained state; a restored run skips its training loop.
        """
        self.save(step, run())
        self._final = True
        if self._signals:
            self._stop()

    def finish(self, commit: Callable[[], T] | None = None) -> T | None:
        """The run is written: call ``commit`` (the write that marks the run finished, e.g. its
        ``metrics.json``), remove ``resume.pt`` and give up the folder; a signal meanwhile waits until
        all three are done, then raises :class:`Interrupted` with the run finished.

        :return: what ``commit`` returned.
        """
        self._committing = True
        try:
            result = commit() if commit is not None else None
            self.path.unlink(missing_ok=True)
            release_output(self.out)
        finally:
            self._committing = False
        if self._signals and self._handlers:
            print(f"interrupted after the run was written: {self.out} holds the finished run", flush=True)
            raise Interrupted
        return result

    def _stop(self) -> None:
        print(f"interrupted: saved {self.path}; continue with the same command and --resume", flush=True)
        raise Interrupted

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)
        if self._final and not self._committing:  # the trained state is saved: stop here
            self._final = False  # one Interrupted, even if signals follow while it unwinds
            self._stop()

    def __enter__(self) -> ResumePoint:
        self._handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:  # also when a step raises: the caller's handlers come back
        for s, handler in self._handlers.items():
            signal.signal(s, handler)
        self._handlers = {}
        self._final = False
