"""What a run guarantees (docs/runs.md): a headless machine never crashes, one live run per output
folder, digests on every checkpoint and resume file, a signal at any point leaves a finished or a
resumable run, and a user's mistake is one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from agents.baselines import FixedSequence
from agents.checkpoint import load_agent, save_agent
from agents.cli import UserError, run_main
from envs.perception import PerceptionCore

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _ResumeArgs:
    """The arguments a ``ResumePoint`` (train/run.py) reads."""

    out: str
    resume: bool = False
    overwrite: bool = False
    save_every: float = 3600.0


def reinforce_args(out: Path, **kwargs) -> _ResumeArgs:
    return _ResumeArgs(str(out), **kwargs)


def load_reinforce_script():
    """train/reinforce.py as a module (its ``main`` and ``Args``)."""
    import train.reinforce as script

    return script


def tiny_reinforce_kwargs(out: Path) -> dict:
    return dict(num_envs=16, max_glimpses=3, total_steps=96, eval_images=50, device="cpu", out=str(out))


def _python(code: str, *, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter at the repository root, importing this checkout's packages
    (and train/run.py as the scripts import it, ``run``)."""
    environment = dict(os.environ if env is None else env)
    paths = [str(ROOT), str(ROOT / "train"), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _script(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a script (``train/x.py ...``) as a user does."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


# 1. A headless machine: Gymnasium's checker, then SB3, in one process.


def test_headless_check_env_then_sb3_ppo_runs_on_the_dummy_driver_and_exits_0():
    """With pygame installed, no display and no SDL_VIDEODRIVER: check_env opens the render_mode="human"
    env, which must not pick SDL's offscreen (EGL) driver that crashes the process once torch loads
    triton; SB3's PPO is then created and stepped in the same process."""
    pytest.importorskip("pygame")
    headless = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    result = _python(
        """
        import json, warnings
        import gymnasium, pygame, torch
        from gymnasium.utils.env_checker import check_env
        torch.set_num_threads(1)
        import envs

        drivers = []
        set_mode = pygame.display.set_mode
        def recording_set_mode(*args, **kwargs):
            drivers.append(pygame.display.get_driver())
            return set_mode(*args, **kwargs)
        pygame.display.set_mode = recording_set_mode

        env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        from stable_baselines3 import PPO
        model = PPO("MlpPolicy", gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=2), n_steps=8,
                    batch_size=8, n_epochs=1, device="cpu", seed=0)
        model.learn(8)
        import os
        print(json.dumps({"drivers": drivers, "warnings": [str(w.message) for w in caught],
                          "modes": env.unwrapped.metadata["render_modes"],
                          "sdl": os.environ.get("SDL_VIDEODRIVER"), "steps": model.num_timesteps}))
        """,
        env=headless,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modes"] == ["human", "rgb_array"]
    assert report["drivers"] == ["dummy"]  # the human window of check_env, on SDL's dummy driver
    assert report["sdl"] is None  # the process's environment is left as it was
    assert report["steps"] == 8
    assert any("without a display" in w and "SDL's dummy video driver" in w for w in report["warnings"])


def test_without_pygame_human_is_not_listed_and_check_env_passes():
    result = _python(
        """
        import sys, warnings
        sys.modules["pygame"] = None  # as on a plain install without the human extra
        import gymnasium
        from gymnasium.error import DependencyNotInstalled
        from gymnasium.utils.env_checker import check_env
        import envs
        from envs.glimpse_env import MnistGlimpseEnv

        env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=2)
        assert env.unwrapped.metadata["render_modes"] == ["rgb_array"], env.unwrapped.metadata
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)
        try:
            MnistGlimpseEnv(split="test", max_glimpses=2, render_mode="human")
        except DependencyNotInstalled as error:
            assert "pip install pygame" in str(error), error
        else:
            raise AssertionError("render_mode='human' without pygame was accepted")
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_render_passes_no_deprecated_pillow_mode_argument():
    pytest.importorskip("PIL")
    import warnings

    import numpy as np

    from envs.render import draw_trail

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = draw_trail(np.zeros((28, 28), dtype=np.uint8), np.array([[3.0, 4.0]]), scale=2)
    assert frame.shape == (56, 56, 3) and frame.dtype == np.uint8


# 2. One live run per output folder.


def _holder(out: Path) -> subprocess.Popen:
    """Another process that owns ``out`` until killed."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "train")])
    code = "import sys; from run import lock_output; lock_output(sys.argv[1]); print('owned', flush=True); "
    code += "sys.stdin.read()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], cwd=ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout.readline().strip() == b"owned"
    return process


def test_a_second_run_into_a_live_runs_folder_is_refused_and_a_dead_owner_leaves_no_stuck_lock(tmp_path):
    from run import ResumePoint, claim_output

    out = tmp_path / "run"
    out.mkdir()
    (out / "resume.pt").write_bytes(b"an interrupted run's state")
    owner = _holder(out)
    try:
        with pytest.raises(UserError, match=f"{out} is in use by another run \\(process {owner.pid}\\).*another --out"):
            claim_output(out, overwrite=True)
        with pytest.raises(UserError, match=f"process {owner.pid}"):
            ResumePoint(out, reinforce_args(out, overwrite=True))
        assert (out / "resume.pt").read_bytes() == b"an interrupted run's state"  # refused: nothing changed
    finally:
        owner.kill()  # as a crash: no clean-up runs
        owner.wait()
    assert claim_output(out, overwrite=True) == out  # the operating system released the dead run's lock


# 3. Digests.


def _flip_exponent_bit(path: Path, tensor: torch.Tensor) -> None:
    """Flip the highest exponent bit of ``tensor``'s first float32 inside the file ``path``."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0, "the tensor's bytes are not unique in the file"
    data[at + 3] ^= 0x40  # little-endian float32: bit 30 is in the fourth byte
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_checkpoints_head_bias_is_refused_by_the_loader_and_train_evaluate(tmp_path, core):
    path = tmp_path / "run" / "checkpoint.pt"
    save_agent(path, "fixed-sequence", FixedSequence(2), core, 2)
    load_agent(path)  # intact: loads
    bias = core.state_dict()["head.net.2.bias"]
    _flip_exponent_bit(path, bias)
    damaged = torch.load(path, weights_only=True)["core"]["state_dict"]["head.net.2.bias"]
    assert torch.isfinite(damaged).all() and abs(float(damaged[0])) > 1e30  # a plausible file, a wrong weight
    with pytest.raises(ValueError, match=f"{path} is damaged: .* \\(expected [0-9a-f]{{64}}, found [0-9a-f]{{64}}\\)"):
        load_agent(path)
    result = _script("train/evaluate.py", "--checkpoint", str(path), "--device", "cpu")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and "is damaged" in result.stderr and "Traceback" not in result.stderr


def test_checkpoints_without_a_digest_load_and_the_shipped_agent_is_unchanged(tmp_path, core):
    from agents.shipped import AGENT_PATH, load_shipped_agent

    save_agent(tmp_path / "checkpoint.pt", "fixed-sequence", FixedSequence(2), core, 2)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(checkpoint.pop("digest")) == 64
    torch.save(checkpoint, tmp_path / "old.pt")  # as written before digests
    load_agent(tmp_path / "old.pt")
    assert "digest" not in torch.load(AGENT_PATH, weights_only=True)
    load_shipped_agent()  # SHA-256-checked as a file, and loads


def test_a_changed_resume_file_is_refused_with_both_digests(tmp_path):
    from run import ResumePoint

    out = tmp_path / "run"
    point = ResumePoint(out, reinforce_args(out))
    weights = torch.linspace(0.01, 0.02, 7)
    point.save(3, {"weights": weights})
    ResumePoint(out, reinforce_args(out, resume=True))  # intact: loads
    _flip_exponent_bit(out / "resume.pt", weights)
    with pytest.raises(ValueError, match="resume.pt is damaged: .* \\(expected [0-9a-f]{64}, found [0-9a-f]{64}\\)"):
        ResumePoint(out, reinforce_args(out, resume=True))


# 4. A signal during the final evaluation.

TINY = ["--num-envs", "16", "--max-glimpses", "3", "--total-steps", "96", "--eval-images", "50", "--device", "cpu"]


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_leaves_a_resumable_run_that_resume_finishes(tmp_path):
    """SIGTERM arrives while train/reinforce.py evaluates on the 10,000 test images: the run exits 130
    with OUT/resume.pt; the same command with --resume finishes it, with the metrics and weights of a
    run never stopped."""
    out = tmp_path / "stopped"
    result = _python(
        f"""
        import os, signal, sys, tyro
        import train.reinforce as script
        evaluate = script.accuracy_by_glimpse

        def signalled(*args, **kwargs):  # the final evaluation: SIGTERM arrives as it starts
            os.kill(os.getpid(), signal.SIGTERM)
            return evaluate(*args, **kwargs)

        script.accuracy_by_glimpse = signalled
        sys.argv = ["train/reinforce.py", *{TINY!r}, "--out", {str(out)!r}]
        try:  # as the script's entry point
            script.main(tyro.cli(script.Args))
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert "continue with the same command and --resume" in result.stdout
    assert (out / "resume.pt").is_file() and not (out / "metrics.json").exists()

    resumed = _script("train/reinforce.py", *TINY, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / "resume.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())

    straight_run = _script(
        "train/reinforce.py", *TINY, "--out", str(tmp_path / "straight")
    )  # a fresh process, as the others
    assert straight_run.returncode == 0, straight_run.stderr[-3000:]
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    for key in ("test_accuracy", "test_accuracy_sampled", "learning_curve", "env_steps"):
        if key == "learning_curve":
            assert [p["accuracy_T"] for p in metrics[key]] == [p["accuracy_T"] for p in straight[key]]
        else:
            assert metrics[key] == straight[key], key
    resumed_policy, _, _ = load_agent(out / "checkpoint.pt")
    straight_policy, _, _ = load_agent(tmp_path / "straight" / "checkpoint.pt")
    for a, b in zip(resumed_policy.state_dict().values(), straight_policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# 9. A user's mistake: one line on stderr, exit status 2, no traceback.


def _user_error(capsys, main, args) -> str:
    with pytest.raises(SystemExit) as stopped:
        run_main(main, args)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "Traceback" not in error, error
    return error


def test_a_users_mistakes_are_one_line_and_exit_status_2(tmp_path, capsys):
    script = load_reinforce_script()

    def args(out, **kwargs):
        return script.Args(**{**tiny_reinforce_kwargs(out), **kwargs})

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert "is a file, not a folder; pass a folder" in _user_error(capsys, script.main, args(a_file))
    error = _user_error(capsys, script.main, args(tmp_path / "nothing", resume=True))
    assert "holds no interrupted run (drop --resume)" in error and not (tmp_path / "nothing").exists()
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "metrics.json").write_text("{}")
    assert "holds a finished run" in _user_error(capsys, script.main, args(finished))
    assert (
        "pass --overwrite" in _user_error(capsys, script.main, args(finished)) and (finished / "metrics.json").is_file()
    )
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: a file system that refuses even root
        read_only = Path("/sys/fs/mnist-glimpse-run")
    else:
        (tmp_path / "read-only").mkdir(mode=0o555)
        read_only = tmp_path / "read-only" / "run"
    assert "cannot write to --out" in _user_error(capsys, script.main, args(read_only))
    owner = _holder(tmp_path / "owned")
    try:
        assert f"process {owner.pid}" in _user_error(capsys, script.main, args(tmp_path / "owned"))
    finally:
        owner.kill()
        owner.wait()


@pytest.mark.slow
def test_scripts_print_a_users_mistake_without_a_traceback(tmp_path):
    """The same, through a script's own entry point."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for command in (
        ["train/reinforce.py", *TINY, "--out", str(a_file)],
        ["train/evaluate.py", "--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu"],
    ):
        result = _script(*command)
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_a_bug_keeps_its_traceback(capsys):
    def buggy(_):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_main(buggy, None)


def test_a_flipped_bit_in_a_saved_core_file_is_refused(tmp_path, core):
    """Core files written by PerceptionCore.save (train/pretrain_perception.py, --core-start pretrain,
    train/export_core.py) carry a digest too; the packaged cores carry none and are checked by SHA-256."""
    path = tmp_path / "perception.pt"
    core.save(path)
    PerceptionCore.load(path)  # intact: loads
    _flip_exponent_bit(path, core.state_dict()["head.net.2.bias"])
    with pytest.raises(ValueError, match=f"{path} is damaged: .* \\(expected [0-9a-f]{{64}}, found [0-9a-f]{{64}}\\)"):
        PerceptionCore.load(path)


def test_a_resume_point_saves_what_it_keeps_and_gives_it_back_in_place(tmp_path):
    """Each kind of value ResumePoint.keep takes: a module (its state_dict), a dict and a list (restored
    into the same object), a (get, put) pair and a function (saved; given back in the returned mapping)."""
    from run import Interrupted, ResumePoint

    out = tmp_path / "run"

    def kept(layer, counts, curve, box):
        return dict(
            layer=layer,
            counts=counts,
            curve=curve,
            flag=(lambda: box["flag"], lambda value: box.update(flag=value)),
            seconds=lambda: 1.5,
        )

    torch.manual_seed(0)
    layer, counts, curve, box = torch.nn.Linear(2, 2), {"steps": 3}, [1, 2], {"flag": True}
    point = ResumePoint(out, reinforce_args(out), stop_after=3)
    assert point.keep(**kept(layer, counts, curve, box)) is None
    with pytest.raises(Interrupted), point:
        point.step(3)
    again = (torch.nn.Linear(2, 2), {"steps": 0}, [], {"flag": False})
    resumed = ResumePoint(out, reinforce_args(out, resume=True))
    saved = resumed.keep(**kept(*again))
    assert torch.equal(again[0].weight, layer.weight) and again[1:] == (counts, curve, box)
    assert saved["seconds"] == 1.5 and not resumed.trained
