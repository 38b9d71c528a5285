"""Training-side length-generalization levers: padded operands, length-grouped batches, fixed position tables."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train import tiny

import arith
from arith.data import tasks as T
from arith.data.datasets import StreamBatches
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.train import train

TOK = ArithTokenizer.build()
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_padded_addition_rows_are_equal_length_and_round_trip_through_prompt_and_answer():
    spec = T.get_task("addition", pad_operands=True)
    assert T.get_task("addition").pad_operands is False  # the registry's spec is untouched
    a = np.array([1, 3, 7, 2]), np.array([4, 3, 1, 6])
    ex = spec.make(TOK, np.random.default_rng(0), *a)
    for row, p, n, la, lb in zip(ex.ids, ex.prompt_len, ex.length, *a):
        text = TOK.decode(row[:n])
        w = max(la, lb)
        left, right = text.split("=")
        x, y = left.split("+")
        assert len(x) == len(y) == w and len(right) == w + 1  # answer digits: w + 1
        assert spec.check(text)
        natural = f"{x[::-1].lstrip('0') or '0'}+{y[::-1].lstrip('0') or '0'}"
        assert spec.prompt(natural) == left + "="  # solve writes the problem as training did
        assert spec.answer(right[:-1]) == str(int(x[::-1]) + int(y[::-1]))
    assert spec.prompt("123+4") == "321+400=" and spec.answer("7210") == "127"
    with pytest.raises(ConfigError, match="pad_operands"):
        T.get_task("sorting", pad_operands=True)


def test_padded_run_solves_through_the_api_and_names_its_dataset(compose, tmp_path):
    cfg = tiny(compose, tmp_path, "train.steps=200", "data.pad_operands=true", "train.warmup=0.05")
    assert cfg.data.name.endswith("_pad")
    plain = tiny(compose, tmp_path, "train.steps=2")
    assert not plain.data.name.endswith("_pad") and "None" not in cfg.data.name.replace(plain.data.name, "")
    run = arith.load(train(cfg))
    answer = run.solve("12+345")
    assert answer.isdigit() and (answer == "0" or not answer.startswith("0"))  # padding zeros are stripped


def test_bucketed_batches_hold_the_same_examples_with_less_padding():
    class Cfg:
        task, max_len, max_len_b, bucket, pad_operands = "addition", 8, None, 8, False

    plain_cfg = type("Plain", (Cfg,), {"bucket": 1})
    bucketed, plain = StreamBatches(Cfg, TOK, 64, seed=3), StreamBatches(plain_cfg, TOK, 64, seed=3)

    def rows(batches, steps):
        out = []
        for s in steps:
            b = batches.batch(s)
            out += [tuple(r[r != TOK.pad_id].tolist()) for r in b]
        return sorted(out)

    group = range(8, 16)  # the second group of 8 steps
    assert rows(bucketed, group) == rows(plain, group)
    pad_share = [float((b == TOK.pad_id).float().mean()) for b in map(bucketed.batch, group)]
    plain_share = [float((b == TOK.pad_id).float().mean()) for b in map(plain.batch, group)]
    assert sum(pad_share) < 0.3 * sum(plain_share)
    again = StreamBatches(Cfg, TOK, 64, seed=3)  # pure in (seed, step): a resumed run sees the same batch
    assert torch.equal(again.batch(13), bucketed.batch(13))
    two = [StreamBatches(Cfg, TOK, 64, seed=3, rank=r, world=2).batch(13) for r in (0, 1)]

    def unpadded(t):
        return sorted(tuple(r[r != TOK.pad_id].tolist()) for r in t)

    assert unpadded(torch.cat([two[0], two[1][:, : two[0].shape[1]]])) != [] and sum(map(len, two)) == 64
    assert sorted(unpadded(two[0]) + unpadded(two[1])) == unpadded(
        bucketed.batch(13)
    )  # ranks split one batch


def test_bucket_below_one_is_an_error(compose, tmp_path):
    with pytest.raises(ConfigError, match="data.bucket"):
        train(tiny(compose, tmp_path, "train.steps=2", "data.bucket=0"))


@pytest.mark.parametrize("table", ["orthogonal", "fixed"])
def test_orthogonal_and_fixed_position_tables(compose, tmp_path, table):
    run_dir = train(tiny(compose, tmp_path, "train.steps=5", f"model.pos_table={table}"))
    fresh = arith.load(run_dir)
    w = fresh.model.abs_pos.table.weight.detach()
    norms = w.norm(dim=1)
    assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-3) == (table == "fixed")
    if table == "fixed":  # frozen: the trained table is still the orthonormal start
        unit = w / norms[:, None]
        assert torch.allclose(unit @ unit.T, torch.eye(w.shape[0]), atol=1e-5)


def test_pos_table_typo_is_rejected(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(["model.pos_table=orthogonl"])


def test_plot_positions_script(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=2"))
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_positions.py"), str(run_dir), "--rows", "12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (run_dir / "positions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["row", "norm", "max|cos|"] and len(lines) >= 13
    assert "past training's reach" in out.stdout  # tiny: max_k 5 + 3 digits = row 8
