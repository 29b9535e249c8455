"""``train/compare.py`` machinery (``agents/compare.py``): aggregation, heatmap counting, skip-if-exists.
No training runs here: the subprocess runner is replaced by a fake."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import torch

from agents.baselines import FixedSequence, RandomGlimpses
from agents.checkpoint import load_agent
from agents.compare import (
    CSV_FIELDS,
    GDFS_LABEL,
    JobResult,
    Method,
    aggregate,
    format_mean_std,
    glimpse_density,
    make_job,
    run_job,
    run_jobs,
    summary_row,
    write_csv,
    write_markdown,
    run_logged,
    write_random_glimpses_checkpoint,
)
from envs.sampler import pixel_to_action


def fake_result(method: str, seed: int, accuracy: dict[str, float], status: str = "trained", **metrics) -> JobResult:
    evaluation = {"test_accuracy": accuracy, "accuracy_by_glimpse": list(accuracy.values())}
    return JobResult(method, seed, Path(f"/runs/{method}/seed{seed}"), status, metrics=metrics,
                     evaluation=evaluation if status != "failed" else {}, error="boom\nmore" if status == "failed" else None)


def test_format_mean_std():
    assert format_mean_std([0.5, 0.6, 0.7]) == "60.0 ± 10.0"  # sample std (ddof 1), in percent
    assert format_mean_std([0.4215]) == "42.1"  # one seed: no ± part
    assert format_mean_std([]) == "—"
    assert format_mean_std(["", None]) == "—"  # missing values are skipped
    assert format_mean_std([0.1, "", 0.3]) == f"20.0 ± {100 * math.sqrt(0.02):.1f}"


def test_summary_rows_and_aggregation(tmp_path):
    table = {"1": 0.1, "2": 0.2, "5": 0.5, "10": 0.6, "25": 0.9}
    results = [
        fake_result("ppo-joint", 0, table, train_seconds=100.0, env_steps=1_000_000, device="cpu"),
        fake_result("ppo-joint", 1, {k: v + 0.02 for k, v in table.items()}, train_seconds=120.0, env_steps=1_000_000,
                    device="cpu"),
        fake_result("ppo-joint", 2, {}, status="failed"),
        fake_result("fixed-sequence", 0, table, status="loaded", train_seconds=30.0, device="cuda"),
    ]
    rows = [summary_row(r) for r in results]
    assert rows[0]["acc_25"] == 0.9 and rows[0]["env_steps"] == 1_000_000 and rows[0]["status"] == "trained"
    assert rows[2]["status"] == "failed" and rows[2]["acc_1"] == "" and rows[2]["error"] == "boom"
    assert rows[3]["env_steps"] == ""  # not in metrics.json (differentiable scripts)

    write_csv(rows, tmp_path / "summary.csv")
    with open(tmp_path / "summary.csv") as handle:
        read = list(csv.DictReader(handle))
    assert [r["method"] for r in read] == ["ppo-joint"] * 3 + ["fixed-sequence"] and list(read[0]) == CSV_FIELDS

    lines = aggregate(rows, ["ppo-joint", "fixed-sequence", "never-run"])
    ppo, fixed, never = lines
    assert ppo["25"] == "91.0 ± 1.4" and ppo["1"] == "11.0 ± 1.4"
    assert ppo["train_seconds"] == "110 s" and ppo["env_steps"] == "1.0M" and ppo["device"] == "cpu"
    assert ppo["seeds"] == "2 (1 failed)"
    assert fixed["25"] == "90.0" and fixed["env_steps"] == "—" and fixed["device"] == "cuda" and fixed["seeds"] == "1"
    assert never["25"] == "—" and never["seeds"] == "0"

    text = write_markdown(lines, tmp_path / "summary.md", "preamble")
    body = text.splitlines()
    assert body[0] == "preamble" and body[2].startswith("| method | 1 glimpse | 2 glimpses | 5 glimpses")
    assert "| ppo-joint | 11.0 ± 1.4 | 21.0 ± 1.4 |" in text
    gdfs = body[-1]
    assert gdfs.startswith(f"| {GDFS_LABEL} | — | — | ~69 | ~87 | ~95.5–96 |")


def test_glimpse_density_counts_known_locations(make_core):
    """A fixed sequence puts every glimpse of every image at known pixels."""
    pixels = torch.tensor([[3.0, 5.0], [20.0, 11.0], [3.0, 5.0], [14.0, 14.0]])
    policy = FixedSequence(len(pixels))
    with torch.no_grad():
        policy.theta.copy_(torch.atanh(pixel_to_action(pixels)))
    labels = torch.tensor([0, 3, 3, 7, 3, 0])
    images = torch.randint(0, 256, (len(labels), 28, 28), dtype=torch.uint8)
    counts = glimpse_density(policy, make_core(), images, labels, len(pixels), batch_size=4)  # two batches
    assert counts.shape == (10, 28, 28) and counts.dtype == torch.long
    per_class = torch.bincount(labels, minlength=10)
    assert torch.equal(counts.sum(dim=(1, 2)), per_class * len(pixels))
    for c in range(10):
        assert counts[c, 3, 5] == 2 * per_class[c]
        assert counts[c, 20, 11] == per_class[c] and counts[c, 14, 14] == per_class[c]


class FakeRunner:
    """Records the commands; 'training' writes the run's files, 'evaluation' prints a result."""

    def __init__(self, train_code: int = 0) -> None:
        self.commands: list[list[str]] = []
        self.train_code = train_code

    def __call__(self, command, env, log, capture_stdout):
        self.commands.append(list(command))
        folder = log.parent
        if command[1].endswith("evaluate.py"):
            seed = int(command[command.index("--seed") + 1])
            return 0, json.dumps({"test_accuracy": {"25": 0.5}, "accuracy_by_glimpse": [0.5], "seed": seed})
        if self.train_code == 0:
            (folder / "checkpoint.pt").write_bytes(b"new")
            (folder / "metrics.json").write_text(json.dumps({"train_seconds": 1.0, "note": "new"}))
        log.write_text("Traceback ...\nValueError: bad flag\n")
        return self.train_code, ""

    def trained(self) -> int:
        return sum(not c[1].endswith("evaluate.py") for c in self.commands)


def _job(tmp_path, method="ppo-joint", seed=0):
    return make_job(method, Method("ppo", ("--perception", "joint")), seed, tmp_path, ["--total-steps", "10"], "cpu", 1,
                    python="python")


def test_make_job_command(tmp_path):
    job = _job(tmp_path, seed=2)
    assert job.folder == (tmp_path / "ppo-joint" / "seed2").resolve()
    command = job.train_command
    assert command[0] == "python" and command[1].endswith("train/ppo.py")
    for flag, value in [("--perception", "joint"), ("--total-steps", "10"), ("--seed", "2"), ("--device", "cpu"),
                        ("--out", str(job.folder)), ("--torch-threads", "1")]:
        assert command[command.index(flag) + 1] == value
    assert job.env["OMP_NUM_THREADS"] == "1"
    assert job.evaluate_command[job.evaluate_command.index("--seed") + 1] == "2"
    pretrain = make_job("random-glimpses", Method("pretrain"), 0, tmp_path, [], "cpu", 1)
    assert "--torch-threads" not in pretrain.train_command  # pretrain_perception.py has no such flag
    assert pretrain.train_command[pretrain.train_command.index("--out") + 1].endswith("seed0/perception.pt")


def test_existing_run_is_loaded_not_retrained(tmp_path):
    job = _job(tmp_path)
    job.folder.mkdir(parents=True)
    (job.folder / "checkpoint.pt").write_bytes(b"old")
    (job.folder / "metrics.json").write_text(json.dumps({"train_seconds": 7.0, "note": "old"}))
    runner = FakeRunner()
    result = run_job(job, runner=runner)
    assert result.status == "loaded" and runner.trained() == 0 and len(runner.commands) == 1  # evaluated only
    assert result.metrics["note"] == "old" and result.evaluation["test_accuracy"] == {"25": 0.5}
    assert (job.folder / "evaluation.json").is_file()

    again = FakeRunner()
    assert run_job(job, runner=again).status == "loaded" and again.commands == []  # evaluation.json reused

    forced = FakeRunner()
    result = run_job(job, retrain=True, runner=forced)
    assert result.status == "trained" and forced.trained() == 1 and result.metrics["note"] == "new"


def test_incomplete_run_is_retrained(tmp_path):
    job = _job(tmp_path)
    job.folder.mkdir(parents=True)
    (job.folder / "metrics.json").write_text("{}")  # no checkpoint.pt: a crashed or partial run
    runner = FakeRunner()
    assert run_job(job, runner=runner).status == "trained" and runner.trained() == 1


def test_a_crash_is_reported_not_fatal(tmp_path):
    jobs = [_job(tmp_path, "ppo-joint", 0), _job(tmp_path, "ppo-frozen", 0)]
    results = run_jobs(jobs, parallel=2, runner=FakeRunner(train_code=1))
    assert [r.status for r in results] == ["failed", "failed"]
    assert "status 1" in results[0].error and "ValueError: bad flag" in results[0].error
    rows = [summary_row(r) for r in results]
    assert rows[0]["error"].startswith("RuntimeError: training exited with status 1")


def test_run_jobs_keeps_job_order(tmp_path):
    jobs = [_job(tmp_path, "ppo-joint", seed) for seed in range(4)]
    reports = []
    results = run_jobs(jobs, parallel=2, runner=FakeRunner(), report=lambda done, total, r: reports.append(done))
    assert [r.seed for r in results] == [0, 1, 2, 3] and sorted(reports) == [1, 2, 3, 4]
    assert all(r.status == "trained" for r in results)


def test_random_glimpses_checkpoint_wraps_the_pretrained_core(tmp_path, make_core):
    core = make_core(3)
    core.save(tmp_path / "perception.pt")
    write_random_glimpses_checkpoint(tmp_path, glimpses=7)
    policy, loaded, checkpoint = load_agent(tmp_path / "checkpoint.pt")
    assert isinstance(policy, RandomGlimpses) and checkpoint["agent"] == "random-glimpses" and checkpoint["glimpses"] == 7
    assert all(torch.equal(a, b) for a, b in zip(core.state_dict().values(), loaded.state_dict().values()))


def test_real_runner_logs_and_reports_a_crash(tmp_path):
    """The subprocess runner itself: exit status, captured stdout, stderr in the log."""
    log = tmp_path / "run" / "train.log"
    script = "import sys; print('to stdout'); sys.stderr.write('Traceback\\nKeyError: x\\n'); sys.exit(3)"
    code, stdout = run_logged([sys.executable, "-c", script], dict(os.environ), log, capture_stdout=True)
    assert code == 3 and stdout.strip() == "to stdout" and "KeyError: x" in log.read_text()
    job = _job(tmp_path)
    job.train_command = [sys.executable, "-c", script]
    result = run_job(job)
    assert result.status == "failed" and "status 3" in result.error and "KeyError: x" in result.error


def test_a_warm_started_job_runs_after_its_prerequisite(tmp_path):
    fixed = make_job("fixed-sequence", Method("differentiable", ("--policy", "fixed")), 1, tmp_path, [], "cpu", 1)
    warm = make_job("ppo-joint-from-fixed", Method("ppo", ("--perception", "joint"), warm_start="fixed-sequence"), 1,
                    tmp_path, [], "cpu", 1)
    init_from = warm.train_command[warm.train_command.index("--init-from") + 1]
    assert init_from == str(fixed.folder / "checkpoint.pt") and warm.after == "fixed-sequence"
    assert "--init-from" not in fixed.train_command

    runner = FakeRunner()
    results = run_jobs([warm, fixed], parallel=2, runner=runner)  # listed first, trained second
    trained = [c for c in runner.commands if not c[1].endswith("evaluate.py")]
    assert [c[1].rsplit("/", 1)[1] for c in trained] == ["differentiable.py", "ppo.py"]
    assert [r.method for r in results] == ["ppo-joint-from-fixed", "fixed-sequence"]  # job order kept


def test_a_warm_start_whose_prerequisite_failed_is_not_run(tmp_path):
    fixed = make_job("fixed-sequence", Method("differentiable", ("--policy", "fixed")), 0, tmp_path, [], "cpu", 1)
    warm = make_job("ppo-joint-from-fixed", Method("ppo", warm_start="fixed-sequence"), 0, tmp_path, [], "cpu", 1)
    runner = FakeRunner(train_code=1)
    results = run_jobs([fixed, warm], parallel=1, runner=runner)
    assert [r.status for r in results] == ["failed", "failed"] and len(runner.commands) == 1
    assert "warm start fixed-sequence seed 0 failed" in results[1].error
