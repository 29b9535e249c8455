"""benchmarks/before_after.py: what it reads from the benchmarks, and its refusals (no benchmark runs here)."""

from __future__ import annotations

import pytest

from agents.cli import UserError


@pytest.fixture(scope="module")
def before_after(load_script):
    return load_script("benchmarks/before_after.py")


def test_the_train_step_table_is_read_by_variant(before_after):
    printed = (
        "DualOptimizerTrainer.step, batch 256, ...\n| variant | steps/s | time per step vs attention |\n|---|--:|--:|\n"
        "| attention | 8.25 | 1.00x |\n| pixel memory, greedy credit | 1.52 | 5.43x |\n"
    )
    rows = {m["name"]: float(m["rate"]) for m in before_after.TABLE_ROW.finditer(printed)}
    assert rows == {"attention": 8.25, "pixel memory, greedy credit": 1.52}


def test_an_unknown_ref_and_no_rounds_are_refused(before_after, tmp_path):
    with pytest.raises(UserError, match="--ref no-such-commit names no commit"):
        before_after.export_tree("no-such-commit", tmp_path)
    with pytest.raises(UserError, match="--rounds must be >= 1"):
        before_after.main(before_after.Args(ref="HEAD", rounds=0))
    assert list(tmp_path.iterdir()) == []
