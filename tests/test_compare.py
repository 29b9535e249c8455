"""experiments/compare.py: tables from the runs' metrics.json, commands, resume, Ray tasks, the generated document."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import experiments.compare as compare
from agents.baselines import FixedSequence
from agents.cli import UserError
from envs.sampler import pixel_to_action

TABLE = {"1": 0.1, "2": 0.2, "5": 0.5, "10": 0.6, "25": 0.9}


def write_run(out: Path, method: str, seed: int, accuracy: dict[str, float], **metrics) -> None:
    folder = out / method / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy, "seed": seed, **metrics}))


def test_format_mean_std():
    assert compare.format_mean_std([0.5, 0.6, 0.7]) == "60.0 ± 10.0"  # sample std (ddof 1), in percent
    assert compare.format_mean_std([0.4215]) == "42.1"  # one seed: no ± part
    assert compare.format_mean_std([]) == "—"
    assert compare.format_mean_std([0.1, 0.3]) == f"20.0 ± {100 * math.sqrt(0.02):.1f}"


def test_tables_come_from_the_runs_metrics(tmp_path):
    write_run(tmp_path, "ppo-joint", 0, TABLE, train_seconds=100.0, env_steps=1_000_000, device="cpu")
    write_run(
        tmp_path,
        "ppo-joint",
        1,
        {k: v + 0.02 for k, v in TABLE.items()},
        train_seconds=120.0,
        env_steps=1_000_000,
        device="cpu",
    )
    write_run(tmp_path, "differentiable-best", 0, TABLE, train_seconds=30.0, device="cuda")
    write_run(tmp_path, "not-a-method", 0, TABLE)
    (tmp_path / "fixed-sequence" / "seed0").mkdir(parents=True)  # unfinished: no metrics.json
    runs = compare.finished_runs(tmp_path)
    assert list(runs) == ["differentiable-best", "ppo-joint"]  # table order, unknown and unfinished skipped

    ppo = compare.table_row("ppo-joint", runs["ppo-joint"])
    assert ppo["25"] == "91.0 ± 1.4" and ppo["1"] == "11.0 ± 1.4"
    assert (ppo["train_seconds"], ppo["env_steps"], ppo["device"], ppo["seeds"]) == ("110 s", "1.0M", "cpu", "0, 1")
    best = compare.table_row("differentiable-best", runs["differentiable-best"])
    assert best["25"] == "90.0" and best["env_steps"] == "—" and best["device"] == "cuda"

    text = compare.results_doc(runs, tmp_path)
    headline, short = text.split("## Every method at the short budget")
    assert "| differentiable-best | 10.0 | 20.0 | 50.0 | 60.0 | 90.0 |" in headline and "ppo-joint |" not in headline
    assert "| ppo-joint | 11.0 ± 1.4 | 21.0 ± 1.4 |" in short
    assert f"| {compare.GDFS_LABEL} | — | — | ~69 | ~87 | ~95.5–96 |" in headline
    assert "`python train/differentiable.py --preset best --seed K --out " in headline  # each row's command
    assert "pending a GPU machine" not in text  # one run used a GPU
    assert "## RL from scratch on the record" not in text  # no record run: no record table

    write_run(tmp_path, "reinforce-pixel-2M", 0, TABLE, env_steps=2_000_000, device="cpu")
    cpu_only = {m: r for m, r in compare.finished_runs(tmp_path).items() if m != "differentiable-best"}
    text = compare.results_doc(cpu_only, tmp_path)
    assert "the comparison at its GPU budgets (`python experiments/compare.py --gpu --device cuda`" in text
    short, record = text.split("## Every method at the short budget")[1].split("## RL from scratch on the record")
    assert "| ppo-joint |" in short and "reinforce-pixel-2M" not in short
    assert "| reinforce-pixel-2M | 10.0 | 20.0 | 50.0 | 60.0 | 90.0 |" in record
    assert (
        "`python train/reinforce.py --action-type pixel --total-steps 2000000 --perception "
        "envs/pretrained/perception_shipped_agent.pt --seed K --out "
    ) in record

    readme = compare.replace_between_markers(
        "top\n<!-- results-table:start -->\nold\n<!-- results-table:end -->\nend\n", compare.readme_table(runs)
    )
    assert readme.startswith("top\n<!-- results-table:start -->\n| agent | 1 | 2 | 5 | 10 | 25 | seeds | reproduce |")
    assert "old" not in readme and readme.endswith("<!-- results-table:end -->\nend\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        compare.replace_between_markers("no markers", "table")


def test_commands_and_warm_starts():
    command = compare.METHODS["ppo-joint-from-fixed"].command(2, Path("/r/ppo-joint-from-fixed/seed2"))
    assert command[:2] == ["python", "train/ppo.py"] and "--no-progress-bar" in command
    assert command[command.index("--init-from") + 1] == "/r/fixed-sequence/seed2/checkpoint.pt"
    assert command[-4:] == ["--seed", "2", "--out", "/r/ppo-joint-from-fixed/seed2"]
    pretrain = compare.METHODS["random-glimpses"].command(0, Path("/r/random-glimpses/seed0"))
    assert pretrain[-1] == "/r/random-glimpses/seed0/perception.pt"  # the script writes metrics.json beside it
    assert compare.with_warm_starts(["ppo-joint-from-fixed", "fixed-sequence"]) == [
        "fixed-sequence",
        "ppo-joint-from-fixed",
    ]
    with pytest.raises(UserError, match="unknown method"):
        compare.with_warm_starts(["nonsense"])


def test_every_method_uses_flags_its_script_accepts():
    """Each method's differentiable flags parse and pass the script's checks (no ignored option)."""
    import train.differentiable as script

    for method in compare.METHODS.values():
        if method.trainer == "differentiable":
            script.check_args(script.parse_args(list(method.flags)))


def test_run_training_reports_a_crash_and_records_the_command(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text(
        "import json, sys; out = sys.argv[sys.argv.index('--out') + 1]\n"
        "open(out + '/metrics.json', 'w').write(json.dumps({'test_accuracy': {}}))\n"
    )
    result = compare.run_training(["python", str(ok), "--out", str(tmp_path / "run")], {}, str(tmp_path / "run"))
    assert result["status"] == "trained"
    assert (
        json.loads((tmp_path / "run" / "metrics.json").read_text())["command"]
        == f"python {ok} --out {tmp_path / 'run'}"
    )

    bad = tmp_path / "bad.py"
    bad.write_text("import sys; print('to the log'); sys.exit(3)\n")
    result = compare.run_training(["python", str(bad)], {}, str(tmp_path / "crash"))
    assert result["status"] == "failed" and "exit status 3" in result["error"] and "to the log" in result["error"]
    skipped = compare.run_training(["python", str(ok)], {}, str(tmp_path / "after"), after=result)
    assert skipped["status"] == "failed" and "its warm start failed" in skipped["error"]


def test_main_runs_ray_tasks_and_skips_finished_runs(tmp_path, monkeypatch):
    """Missing runs train as Ray tasks (a warm start after its prerequisite); a second call trains nothing."""
    pytest.importorskip("ray")
    script = tmp_path / "trainer.py"
    script.write_text(
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "out = args[args.index('--out') + 1]\n"
        "init = args[args.index('--init-from') + 1] if '--init-from' in args else None\n"
        "assert init is None or open(init).read() == 'ckpt'\n"
        "open(out + '/checkpoint.pt', 'w').write('ckpt')\n"
        "seed = int(args[args.index('--seed') + 1])\n"
        "json.dump({'test_accuracy': {'1': 0.1 + seed / 100, '25': 0.5}, 'seed': seed}, open(out + '/metrics.json', 'w'))\n"
    )
    monkeypatch.setitem(compare.TRAINERS, "fake", (str(script), None, ()))
    monkeypatch.setattr(
        compare,
        "METHODS",
        {"first": compare.Method("fake", headline=True), "second": compare.Method("fake", warm_start="first")},
    )
    args = compare.Args(methods=("second",), seeds=(1,), out=str(tmp_path / "runs"), doc=str(tmp_path / "results.md"))
    write_run(tmp_path / "runs", "first", 0, {"1": 0.1, "25": 0.5})  # a finished run of another call
    assert sorted(compare.main(args)) == [("first", 1, "trained"), ("second", 1, "trained")]
    doc = (tmp_path / "results.md").read_text()
    assert "| first | 10.5 ± 0.7 | — | — | — | 50.0 ± 0.0 |" in doc  # every finished run under OUT, seeds 0 and 1
    assert (tmp_path / "accuracy_vs_glimpses.png").stat().st_size > 1000
    assert compare.main(args) == [("first", 1, "done before"), ("second", 1, "done before")]


def test_main_refuses_smoke_budgets_in_the_results_folder():
    with pytest.raises(UserError, match="--tiny and --gpu runs are not the results folder's budgets"):
        compare.main(compare.Args(tiny=True))


def test_glimpse_density_counts_known_locations(make_core):
    """A fixed sequence puts every glimpse of every image at known pixels."""
    pixels = torch.tensor([[3.0, 5.0], [20.0, 11.0], [3.0, 5.0], [14.0, 14.0]])
    policy = FixedSequence(len(pixels))
    with torch.no_grad():
        policy.theta.copy_(torch.atanh(pixel_to_action(pixels)))
    labels = torch.tensor([0, 3, 3, 7, 3, 0])
    images = torch.randint(0, 256, (len(labels), 28, 28), dtype=torch.uint8)
    counts = compare.glimpse_density(policy, make_core(), images, labels, len(pixels), batch_size=4)  # two batches
    assert counts.shape == (10, 28, 28) and counts.dtype == torch.long
    per_class = torch.bincount(labels, minlength=10)
    assert torch.equal(counts.sum(dim=(1, 2)), per_class * len(pixels))
    for c in range(10):
        assert counts[c, 3, 5] == 2 * per_class[c]
        assert counts[c, 20, 11] == per_class[c] and counts[c, 14, 14] == per_class[c]


def test_the_committed_results_document_is_generated_from_the_committed_runs():
    """docs/results.md and README's table are exactly what the committed runs' metrics.json give."""
    runs = compare.finished_runs(compare.RUNS)
    assert compare.RESULTS_DOC.read_text() == compare.results_doc(runs, compare.RUNS)
    readme = compare.README.read_text()
    assert compare.replace_between_markers(readme, compare.readme_table(runs)) == readme
    assert sys.modules["experiments.compare"] is compare


def test_gdfs_rows_at_equal_compute_and_on_the_gpu_only(tmp_path):
    """gdfs-at-our-budget trains for the mean training time of differentiable-best's committed runs;
    gdfs-full runs only with --gpu (or --tiny); both rows get their own table beside differentiable-best."""
    seconds = [
        json.loads(p.read_text())["train_seconds"]
        for p in sorted((compare.RUNS / "differentiable-best").glob("seed*/metrics.json"))
    ]
    assert len(seconds) == 3 and compare.EQUAL_BUDGET_SECONDS == round(sum(seconds) / 3)
    command = compare.METHODS["gdfs-at-our-budget"].command(1, Path("/r/gdfs-at-our-budget/seed1"))
    assert command[:4] == ["python", "train/gdfs.py", "--budget-seconds", str(compare.EQUAL_BUDGET_SECONDS)]
    assert "gdfs-full" not in compare.Args().methods and "gdfs-at-our-budget" in compare.Args().methods
    with pytest.raises(UserError, match=r"\['gdfs-full'\] run only at the GPU budgets: pass --gpu"):
        compare.main(compare.Args(methods=("gdfs-full",), out=str(tmp_path / "runs"), doc=str(tmp_path / "r.md")))
    with pytest.raises(FileNotFoundError, match="no finished run of nothing"):
        compare.mean_train_seconds("nothing", tmp_path)

    import tyro

    import train.gdfs as script

    for method in ("gdfs-at-our-budget", "gdfs-full"):
        flags = [*compare.METHODS[method].flags, *compare.SCALES["tiny"]["gdfs"], *compare.SCALES["gpu"]["gdfs"]]
        script.check_args(tyro.cli(script.Args, args=flags))

    write_run(tmp_path, "differentiable-best", 0, TABLE, train_seconds=30.0, device="cpu")
    write_run(tmp_path, "gdfs-at-our-budget", 0, TABLE, train_seconds=29.0, device="cpu")
    write_run(tmp_path, "gdfs-full", 0, TABLE, train_seconds=900.0, device="cuda")
    text = compare.results_doc(compare.finished_runs(tmp_path), tmp_path)
    section = text.split("## GDFS run here, beside the best agent")[1]
    assert "| differentiable-best |" in section and "| gdfs-at-our-budget |" in section and "| gdfs-full |" in section
    assert "| gdfs-" not in text.split("## GDFS run here")[0]  # not in the other tables
    assert "| GDFS (Covert et al., ICML 2023): published | — | — | ~69 |" in section
