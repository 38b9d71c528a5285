"""Seed tables (arith/eval/tables.py) and scripts/repro_table.py on synthetic runs with real eval CSVs."""

import subprocess
import sys
from pathlib import Path

import pytest

from arith.errors import DataError
from arith.eval.grid import Cell, GridCSV
from arith.eval.tables import diagonal_table, group_runs, markdown_table, per_run_table, score_run
from tests.test_plots import read_png

ROOT = Path(__file__).resolve().parents[1]


def diagonal_run(root: Path, name: str, correct: dict[int, int], train: int = 4, n: int = 10) -> Path:
    """A run trained to ``train`` digits whose diagonal cell (L, L) has ``correct[L]`` of ``n`` right."""
    run = root / name
    out = GridCSV(run / "eval" / "addition_sq_s0of1.csv")
    for length, c in correct.items():
        out.append("addition", Cell(length, length), n=n, correct=c)
    (run / "config.yaml").write_text(f"name: {name}\ndata:\n  task: addition\n  max_len: {train}\n")
    return run


def test_score_run_reads_multiples_near_mean_and_reach(tmp_path):
    # trained to 4: in-dist = cells 1..4, (1x, 2x] = 5..8, 2x = 8, 3x = 12, 5x = 20 (not evaluated)
    correct = {1: 10, 2: 10, 3: 10, 4: 8, 5: 9, 6: 6, 7: 9, 8: 2, 12: 0}
    s = score_run(diagonal_run(tmp_path, "a_s0", correct))
    assert s.task == "addition" and s.trained == (4, 4)
    assert s.in_dist == pytest.approx((1 + 1 + 1 + 0.8) / 4)
    assert s.near == pytest.approx((0.9 + 0.6 + 0.9 + 0.2) / 4)
    assert s.at == {2: pytest.approx(0.2), 3: 0.0, 5: None}
    assert s.reach == 3  # 4 digits fall to 80%, so the run holds >= 90% up to 3


def test_groups_strip_seed_suffix_and_table_gives_mean_and_range(tmp_path):
    runs = [
        diagonal_run(tmp_path, "abacus_s0", {L: 10 for L in range(1, 9)}),
        diagonal_run(tmp_path, "abacus_s1", {**{L: 10 for L in range(1, 8)}, 8: 4}),
        diagonal_run(tmp_path, "nope_s0", {**{L: 10 for L in range(1, 5)}, **{L: 0 for L in range(5, 9)}}),
    ]
    groups = group_runs(runs)
    assert list(groups) == ["abacus", "nope"] and [len(v) for v in groups.values()] == [2, 1]
    table = markdown_table(groups).splitlines()
    assert table[0].startswith("| runs | seeds | in-dist | (1x, 2x] mean | 2x | 3x | 5x |")
    # abacus: 2x = 100 and 40 -> mean 70, range 40-100; near = (100, 85) -> 92 (85-100); reach 8 and 7 -> 7.5
    assert table[2] == "| abacus (addition ≤4) | 2 | 100 | 92 (85–100) | 70 (40–100) | – | – | 7.5 (7–8) |"
    assert table[3] == "| nope (addition ≤4) | 1 | 100 | 0 | 0 | – | – | 4 |"
    assert "| abacus_s1 | 100 | 85 | 40 | – | – | 7 |" in per_run_table(groups).splitlines()
    cells = diagonal_table(groups, [7, 8, 9]).splitlines()
    assert cells[0] == "| run | 7 | 8 | 9 |" and cells[3] == "| abacus_s1 | 100 | 40 | – |"


def test_score_run_errors_without_config_or_results(tmp_path):
    run = diagonal_run(tmp_path, "r", {1: 10})
    (run / "config.yaml").unlink()
    with pytest.raises(DataError, match="no config.yaml"):
        score_run(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("data:\n  task: addition\n  max_len: 4\n")
    with pytest.raises(DataError, match="no evaluation results"):
        score_run(empty)


def test_repro_table_script_prints_table_and_writes_group_plot(tmp_path):
    for s, last in enumerate((10, 6, 2)):  # near: 100, 90, 80; 2x: 100, 60, 20; reach: 8, 7, 7
        diagonal_run(tmp_path, f"abacus_s{s}", {**{L: 10 for L in range(1, 8)}, 8: last})
    runs = sorted(str(p) for p in tmp_path.glob("abacus_s*"))
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/repro_table.py"),
            *runs,
            "--lengths",
            "7-8",
            "--plot",
            str(tmp_path / "g"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| abacus (addition ≤4) | 3 | 100 | 90 (80–100) | 60 (20–100) | – | – | 7.3 (7–8) |" in out
    assert "| abacus_s2 | 100 | 20 |" in out
    read_png(tmp_path / "g.png")
    assert (tmp_path / "g.pdf").stat().st_size > 1000
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts/repro_table.py"), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.splitlines()) == 1


def test_run_cost_reads_params_steps_and_metrics_of_a_trained_run(tmp_path, compose):
    import json

    import arith
    from arith.eval.tables import run_cost
    from arith.train import train

    overrides = [
        "model.width=32",
        "model.heads=2",
        "model.ffn=64",
        "model.layers=1",
        "model.recurrences=1",
        "model.max_pos=32",
        "model.max_k=3",
        "data.max_len=2",
        "data.streaming=true",
        "train.batch_size=16",
        "train.steps=12",
        "train.log_every=4",
        "train.progress=false",
        "train.threads=1",
        f"runs_root={tmp_path}",
    ]
    costs = {}
    for tied in (False, True):
        run = train(compose([*overrides, f"name=tied_{tied}", f"model.tie_embeddings={tied}"]))
        costs[tied] = c = run_cost(run)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert c.params == arith.load(run).model.num_params()
        assert c.steps == 12 and c.seconds > 0 and c.ms_per_step == pytest.approx(1000 * c.seconds / 12)
        assert c.final_loss == pytest.approx(records[-1]["loss"])
        assert c.emb_max_abs == pytest.approx(max(r["emb_max_abs"] for r in records))
    vocab = arith.load(run).tok.vocab_size
    assert costs[False].params - costs[True].params == vocab * 32  # the tied output matrix counts once

    out = GridCSV(run / "eval" / "addition_sq_s0of1.csv")  # the trained run's own config scores it
    for length in (1, 2):
        out.append("addition", Cell(length, length), n=10, correct=10)
    rows = per_run_table(group_runs([run]), cost=True).splitlines()
    assert rows[0].endswith("| params | steps | ms/step | final loss | max abs emb |")
    assert (
        rows[2].startswith("| tied_True | 100 |") and f"| {costs[True].params / 1e3:.1f}k | 12 |" in rows[2]
    )
