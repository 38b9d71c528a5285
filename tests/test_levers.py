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


def _length_cfg(power):
    class Cfg:
        task, max_len, max_len_b, bucket, pad_operands, length_power = "sorting", 5, 4, 1, False, power

    return Cfg


def test_length_power_weights_each_axis_by_length_and_zero_keeps_the_uniform_rows():
    spec = T.get_task("sorting")
    a, b = spec.lengths(np.random.default_rng(7), 40_000, 5, 4, power=1.0)
    for lens, top in [(a, 5), (b, 4)]:
        share = np.bincount(lens, minlength=top + 1)[1:] / len(lens)
        want = np.arange(1, top + 1) / np.arange(1, top + 1).sum()  # P(l) = l / sum
        assert np.abs(share - want).max() < 0.01
    a2, _ = spec.lengths(np.random.default_rng(7), 40_000, 5, 4, power=-1.0)  # toward short lengths
    assert np.bincount(a2)[1] > 2 * np.bincount(a2)[5]
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    a0, b0 = spec.lengths(rng, 100, 5, 4, power=0.0)  # 0: the uniform draw from the same generator, as before
    assert np.array_equal(a0, ref.integers(1, 6, size=100)) and np.array_equal(
        b0, ref.integers(1, 5, size=100)
    )
    # through the batches: power 0 gives the rows a config without the key gives; power 1 gives longer rows
    no_key = type("NoKey", (), {k: v for k, v in vars(_length_cfg(0.0)).items() if k != "length_power"})
    assert torch.equal(
        StreamBatches(_length_cfg(0.0), TOK, 64, seed=5).batch(3), StreamBatches(no_key, TOK, 64, 5).batch(3)
    )

    def mean_len(cfg):
        batches = StreamBatches(cfg, TOK, 256, seed=5)
        return float(np.mean([(batches.batch(s) != TOK.pad_id).sum(1).float().mean() for s in range(4)]))

    assert mean_len(_length_cfg(1.0)) > 1.15 * mean_len(_length_cfg(0.0))


def test_length_power_named_validated_and_in_the_resume_identity(compose, tmp_path):
    from arith.start import IDENTITY_KEYS

    cfg = compose(["data=sorting", "data.max_len=5", "data.max_len_b=5", "data.length_power=1"])
    assert cfg.data.name == "sorting_5x5_n20000000_s0_lp1"
    assert compose(["data.length_power=0.5"]).data.name.endswith("_lp0.5")
    assert not compose([]).data.name.endswith("_lp0")  # uniform: the name as before
    assert "data.length_power" in IDENTITY_KEYS
    for bad in ["nan", "9"]:
        with pytest.raises(ConfigError, match=r"data.length_power=.* must be in \[-8, 8\]"):
            train(tiny(compose, tmp_path, "train.steps=2", f"data.length_power={bad}"))
    with pytest.raises(Exception, match="lots"):
        compose(["data.length_power=lots"])
    run_dir = train(tiny(compose, tmp_path, "train.steps=2", "data.length_power=1"))
    with pytest.raises(ConfigError, match="data.length_power"):  # a resume must keep the run's lengths
        train(tiny(compose, tmp_path, "train.steps=4", "data.length_power=2", f"name={run_dir.name}"))


# ------------------------------------------------------------------ data.close_frac (sorting)
def _sorting_rows(spec, split, n=400, seed=11, a=5, b=4):
    """(numbers, answer labels) of each row, read back from the tokens (label_last: reversed digits, ':', label)."""
    ex = spec.make(TOK, np.random.default_rng(seed), np.full(n, a), np.full(n, b), split=split)
    rows = []
    for ids, length in zip(ex.ids, ex.length):
        text = TOK.decode([int(t) for t in ids[: length - 1]])
        prompt, answer = text.split("=", 1)
        items = [item.split(":") for item in prompt.split(",")]
        rows.append(({label: int(digits[::-1]) for digits, label in items}, answer.split(",")))
    return rows


def test_close_rows_share_their_top_digits_and_are_still_sorted_right():
    spec = T.get_task("sorting", answer_format="label_last", close_frac=1.0)
    shared, rows = [], _sorting_rows(spec, "train")
    for numbers, answer in rows:
        assert answer == sorted(numbers, key=numbers.get)  # ascending, ties in the order given
        values = [str(v) for v in numbers.values()]
        # every number has the row's most digits and at least its first's top digit (a row the change would have
        # put in the held-out split keeps its old numbers: a few in 100)
        if {len(v) for v in values} == {5} and len({v[0] for v in values}) == 1:
            shared.append(next((p for p in range(5) if len({v[p] for v in values}) > 1), 5))
    assert len(shared) > 0.9 * len(rows)
    # P shared top digits, uniform in 1..4: the first differing digit is spread over the row, not only the top
    assert min(shared) >= 1 and {2, 3, 4} <= set(shared)


def test_close_frac_off_and_evaluation_rows_are_todays():
    base = T.get_task("sorting", answer_format="label_last")
    assert T.get_task("sorting", answer_format="label_last", close_frac=0.0) is base
    half = T.get_task("sorting", answer_format="label_last", close_frac=0.5)
    assert _sorting_rows(half, "eval") == _sorting_rows(base, "eval")  # evaluation never changes
    plain = _sorting_rows(base, "train")
    rows = _sorting_rows(half, "train")

    def alike(rows):  # rows whose numbers all have one length and one top digit
        return sum(len({(len(str(v)), str(v)[0]) for v in nums.values()}) == 1 for nums, _ in rows)

    assert alike(rows) > alike(plain) + 0.3 * len(rows)  # about half the rows (of 2-4 numbers) are close ones
    with pytest.raises(ConfigError, match="data.close_frac=0.5 is defined for sorting only"):
        T.get_task("addition", close_frac=0.5)


def test_close_frac_named_validated_and_in_the_resume_identity(compose, tmp_path):
    from arith.start import IDENTITY_KEYS

    cfg = compose(["data=sorting", "data.max_len=5", "data.max_len_b=5", "data.close_frac=0.5"])
    assert cfg.data.name == "sorting_5x5_n20000000_s0_cf0.5"
    assert not compose([]).data.name.endswith("_cf0")
    assert "data.close_frac" in IDENTITY_KEYS
    sorting = ["data=sorting", "data.max_len=3", "data.max_len_b=3", "data.format=label_last"]
    with pytest.raises(ConfigError, match=r"data.close_frac=1.5 must be in \[0, 1\]"):
        train(tiny(compose, tmp_path, *sorting, "train.steps=2", "data.close_frac=1.5"))
    with pytest.raises(ConfigError, match="data.close_frac=0.5 is defined for sorting only"):
        train(tiny(compose, tmp_path, "train.steps=2", "data.close_frac=0.5"))
    run_dir = train(tiny(compose, tmp_path, *sorting, "train.steps=2", "data.close_frac=0.5"))
    with pytest.raises(ConfigError, match="data.close_frac"):  # a resume must keep the run's data
        train(tiny(compose, tmp_path, *sorting, "train.steps=4", "data.close_frac=1", f"name={run_dir.name}"))
