"""Self-improvement (arith/selfimprove): the vote filter, the frontier, one round end to end, SIGKILL and
resume, a wrong labeler's answers are exactly what trains, one-line config errors."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from safetensors.torch import load_file, save_file

import arith
from arith import checkpoint
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.eval.decode import generate
from arith.metrics import read_metrics
from arith.selfimprove import label as L
from arith.selfimprove.loop import advance, self_improve

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "self_improve.py"
TOK = ArithTokenizer.build()
EOS = TOK.eos_id
D = TOK.digit_ids


def ans(*digits, eos=True):
    return tuple(D[d] for d in digits) + ((EOS,) if eos else ())


# ---------------------------------------------------------------------------------------------- pure parts
def test_vote_filter_keeps_and_drops_the_right_rows():
    allowed = L.answer_tokens(TOK)
    good, other = ans(3, 4), ans(3, 5)
    votes = [
        [good, good, good, good],  # unanimous: kept, share 1
        [good, good, good, other],  # 3/4: kept at 0.75
        [good, good, other, other],  # a tie 2/2: the earliest vote's answer, share 0.5 < 0.75: dropped
        [ans(3, 4, 5, 6)] * 4,  # unanimous but 4 digits where 2..3 are possible: dropped
        [ans(3, 4, eos=False)] * 4,  # never wrote EOS: dropped
        [(D[3], TOK.eq_id, EOS)] * 4,  # '=' is no answer token: dropped
        [other, good, good, other],  # tie: the first vote's answer (other), 0.5
    ]
    bounds = [(2, 3)] * len(votes)
    kept = L.vote_filter(votes, 0.75, bounds, EOS, allowed)
    assert kept == [(0, good, 1.0), (1, good, 0.75)]
    loose = L.vote_filter(votes, 0.5, bounds, EOS, allowed)
    assert [(i, a) for i, a, _ in loose] == [(0, good), (1, good), (2, good), (6, other)]
    assert L.vote_filter(votes, 1.0, bounds, EOS, allowed) == [(0, good, 1.0)]


def test_draw_sets_the_shorter_operand_by_short_operand_min():
    from arith.data.tasks import get_task

    task = get_task("addition")

    def lengths(short_min):
        rng = np.random.default_rng(3)
        _, a, b = L.draw(
            task, TOK, rng, 400, frontier=20, step=10, trained=8, inside=0.25, short_min=short_min
        )
        return a, b

    a0, b0 = lengths(0.0)  # today's draw, unchanged: the other operand uniform in 1..longest
    rng = np.random.default_rng(3)
    longest = np.concatenate([rng.integers(21, 31, size=300), rng.integers(9, 21, size=100)])
    other = (rng.random(400) * longest).astype(np.int64) + 1
    swap = rng.random(400) < 0.5
    assert (a0 == np.where(swap, other, longest)).all() and (b0 == np.where(swap, longest, other)).all()
    assert np.minimum(a0, b0).min() == 1
    a1, b1 = lengths(1.0)
    assert (a1 == b1).all() and 9 <= a1.min() and a1.max() <= 30  # both equally long: the diagonal
    a5, b5 = lengths(0.5)
    short, long_ = np.minimum(a5, b5), np.maximum(a5, b5)
    assert (short >= np.ceil(0.5 * long_)).all() and (short < long_).any()


def test_answer_lengths_hold_every_true_answer():
    from arith.data.tasks import TASKS, get_task

    rng = np.random.default_rng(0)
    specs = [*TASKS.values(), get_task("addition", True), get_task("multiplication", True)]
    specs += [get_task(t, answer_format="scratchpad") for t in ("subtraction", "multiplication")]
    specs += [get_task("sorting", answer_format=f) for f in ("label_last", "values")]
    for spec in specs:
        for a_len, b_len in [(1, 1), (1, 5), (4, 2), (6, 6)]:
            if spec.name == "sorting" and b_len > 5:
                continue
            ex = spec.make(TOK, rng, np.full(64, a_len), np.full(64, b_len))
            lo, hi = spec.answer_lengths(a_len, b_len)
            got = ex.length - ex.prompt_len - 1  # answer tokens before EOS
            where = (spec.name, spec.answer_format, spec.pad_operands, a_len, b_len)
            assert lo <= got.min() and got.max() <= hi, where


def test_frontier_moves_over_agreeing_lengths_only():
    info = {"labeled": {"9": 10, "10": 10, "11": 10, "12": 10}, "kept": {"9": 9, "10": 6, "11": 2, "12": 9}}
    assert advance(8, info, 4, 0.5) == 10  # 11 fell short: 12 does not count though it agreed
    assert advance(8, info, 4, 0.0) == 12  # 0: every labeled length
    assert advance(8, info, 4, 0.95) == 8
    assert advance(8, info, 2, 0.5) == 10


# ---------------------------------------------------------------------------------------------- runs
SMALL = [
    "rounds=1",
    "steps_per_round=6",
    "problems_per_round=24",
    "frontier_step=1",
    "vote_ks=[0,1,2]",
    "threshold=0.6",
    "batch_size=16",
    "report_lens=[1,2]",
    "report_n=8",
    "save_every_steps=2",
    "progress=false",
    "threads=1",
]


def si_config(compose, run, out, *overrides):
    return compose([f"run={run}", f"out={out}", *SMALL, *overrides], config_name="self_improve")


def test_one_round_end_to_end(compose, tiny_adder, tmp_path):
    out = self_improve(si_config(compose, tiny_adder, tmp_path / "child"))
    rows, info = L.load_round(L.round_dir(out, 0))
    assert info["labeled"] == {"2": 24}  # the frontier starts at the run's training length (1 digit)
    assert len(rows) == sum(info["kept"].values()) > 0
    for row in rows:  # prompt with a 2-digit operand, then an answer of 2..3 digits and EOS
        text = TOK.decode(row, stop_at_eos=False)
        assert text.endswith(TOK.decode([EOS], stop_at_eos=False)) and "=" in text
    assert checkpoint.latest(out).name == "6" and [d.name for d in checkpoint.step_dirs(out)] == ["6"]
    (report,) = [r for r in read_metrics(out) if "heldout" in r]
    assert report["round"] == 0 and set(report["heldout"]) == {"1", "2"} and report["labeled"] == 24
    assert 0 <= report["kept_accuracy"] <= 1
    assert (out / "self_improve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    child = arith.load(out)  # a run like any other
    assert child.step == 6 and isinstance(child.solve("3+4"), str)
    parent = arith.load(tiny_adder)
    # it answers with the vote it labeled with (the parent has none)
    assert list(child.model.cfg.eval_vote_ks) == [0, 1, 2] and not parent.model.cfg.eval_vote_ks
    assert any(not torch.equal(a, b) for a, b in zip(child.model.parameters(), parent.model.parameters()))


def _cmd(run, out, *extra):
    return [sys.executable, str(SCRIPT), f"run={run}", f"out={out}", *SMALL, *extra]


def _wait_for(path: Path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"ended before {path} appeared: {proc.stderr.read()}"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_sigkill_mid_round_resumes_to_the_same_labels_and_weights(tiny_adder, tmp_path):
    args = ["rounds=2", "steps_per_round=40", "save_every_steps=10", "problems_per_round=48"]
    ref = tmp_path / "ref"
    first = subprocess.run(_cmd(tiny_adder, ref, *args), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    victim = tmp_path / "victim"
    # killed mid-round 0 (a mid-round checkpoint exists), then again once round 1's labels are stored
    for marker in (victim / "checkpoints" / "10", L.round_dir(victim, 1)):
        proc = subprocess.Popen(
            _cmd(tiny_adder, victim, *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        _wait_for(marker, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert checkpoint.latest(victim).name != "80"
    done = subprocess.run(_cmd(tiny_adder, victim, *args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for r in (0, 1):
        assert L.load_round(L.round_dir(ref, r))[0] == L.load_round(L.round_dir(victim, r))[0]
    assert [d.name for d in checkpoint.step_dirs(victim)] == ["40", "80"]  # round ends, kept
    for step in ("40", "80"):
        a = load_file(str(ref / "checkpoints" / step / checkpoint.WEIGHTS))
        b = load_file(str(victim / "checkpoints" / step / checkpoint.WEIGHTS))
        assert all(torch.equal(a[k], b[k]) for k in a), step
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(read_metrics(ref)) == strip(read_metrics(victim))


def _digit_rotated_copy(run: Path, dest: Path) -> Path:
    """A labeler that reads every digit d as d+1 and writes e as e-1 (mod 10): it adds the rotated numbers
    correctly and so answers the real problem wrong, with answers of a possible length."""
    shutil.copytree(run, dest)
    perm = list(range(TOK.vocab_size))
    for d in range(10):
        perm[D[d]] = D[(d + 1) % 10]
    for ckpt in checkpoint.step_dirs(dest):
        for name in (checkpoint.WEIGHTS, checkpoint.EMA_WEIGHTS):
            if (ckpt / name).exists():
                w = load_file(str(ckpt / name))
                for key in ("tok_emb.weight", "head.weight"):
                    w[key] = w[key][perm].contiguous()
                save_file(w, str(ckpt / name))
    return dest


def test_a_wrong_labeler_trains_exactly_its_wrong_answers(compose, tiny_adder, tmp_path):
    wrong = _digit_rotated_copy(tiny_adder, tmp_path / "wrong")
    # the student votes once (offset 0), the labeler three times (its eval_vote_ks): at threshold 0.75 only an
    # answer the labeler gives at all three offsets can be kept. frontier_start=0: 1-digit problems, inside
    # the length both know, so the labeler is consistent, and consistently wrong
    (wrong / "config.yaml").write_text(
        (wrong / "config.yaml").read_text().replace("eval_vote_ks: null", "eval_vote_ks: [0, 1, 2]")
    )
    cfg = si_config(
        compose,
        tiny_adder,
        tmp_path / "child",
        "vote_ks=[0]",
        f"labelers=[{wrong}]",
        "threshold=0.75",
        "frontier_start=0",
    )
    out = self_improve(cfg)
    rows, info = L.load_round(L.round_dir(out, 0))
    assert len(rows) >= 12, info
    labeler = arith.load(wrong)
    for row in rows:
        p = row.index(TOK.eq_id) + 1
        prompt = torch.tensor([row[:p]])
        own = [generate(labeler.model, prompt, 4, EOS, TOK.pad_id, k=k)[0].tolist() for k in (0, 1, 2)]
        own = [tuple(o[: o.index(EOS) + 1]) for o in own]
        assert all(o == tuple(row[p:]) for o in own)  # the row is the labeler's answer ...
        a, b = (int(x[::-1]) for x in TOK.decode(row[: p - 1]).split("+"))
        assert TOK.decode(row[p:]) != str(a + b)[::-1]  # ... and it is wrong: no truth leaked in
    assert info["kept_accuracy"] == 0.0


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "override, needle",
    [
        ("rounds=0", "rounds=0 must be >= 1"),
        ("short_operand_min=1.5", "short_operand_min=1.5"),
        ("threshold=0", "threshold=0"),
        ("threshold=1.5", "threshold=1.5"),
        ("pseudo_share=2", "pseudo_share=2"),
    ],
)
def test_bad_values_are_config_errors(compose, tiny_adder, tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        self_improve(si_config(compose, tiny_adder, tmp_path / "child", override))
    assert not (tmp_path / "child").exists()


def test_a_missing_run_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), f"run={tmp_path / 'nope'}"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: run: {tmp_path / 'nope'} is not a run directory (no config.yaml); train it with pretrain.py first"
    ]


def test_a_scheme_without_offsets_needs_labelers(compose, tmp_path):
    from arith.train import train

    cfg = compose(
        [
            "model.width=32",
            "model.heads=2",
            "model.ffn=64",
            "model.layers=1",
            "model.abs_pos=none",
            "model.rel_pos=rope",
            "data.max_len=1",
            "data.streaming=true",
            "train.batch_size=8",
            "train.steps=2",
            "train.progress=false",
            f"runs_root={tmp_path}",
            "name=nope",
        ]
    )
    run = train(cfg)
    with pytest.raises(ConfigError, match="takes no offset.*labelers"):
        self_improve(si_config(compose, run, tmp_path / "child", "vote_ks=null"))
    with pytest.raises(ConfigError, match="takes no offset"):
        self_improve(
            si_config(compose, run, tmp_path / "child2")
        )  # vote_ks=[0,1,2] given: the same, naming it


def test_a_resume_may_change_how_new_rounds_are_labeled_not_how_they_train(compose, tiny_adder, tmp_path):
    self_improve(si_config(compose, tiny_adder, tmp_path / "child"))
    for other in ("lr=0.0003", "pseudo_share=0.25", "frontier_step=2", "steps_per_round=7"):
        with pytest.raises(ConfigError, match=f"other settings \\({other.split('=')[0]}"):
            self_improve(si_config(compose, tiny_adder, tmp_path / "child", other))
    first = L.load_round(L.round_dir(tmp_path / "child", 0))
    out = self_improve(si_config(compose, tiny_adder, tmp_path / "child", "rounds=2", "threshold=1.0"))
    assert checkpoint.latest(out).name == "12"
    assert L.load_round(L.round_dir(out, 0)) == first  # the round done keeps its labels
    shares = load_from_disk(str(L.round_dir(out, 1) / "data"))["share"]
    assert all(x == 1.0 for x in shares)  # the new round: labeled with the new threshold


def test_bench_reads_python_made_problems(tiny_adder, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_self_improve as bench

    pairs = bench.problems(3, 50, 7)
    assert pairs == bench.problems(3, 50, 7) and all(100 <= a <= 999 and 100 <= b <= 999 for a, b in pairs)
    run = arith.load(tiny_adder)
    want = sum(run.solve(f"{a}+{b}") == str(a + b) for a, b in bench.problems(1, 40, 7)) / 40
    assert bench.accuracy(run, 1, 40, 7, None, 16) == want  # batched vote decode == solve, one problem each
    other = shutil.copytree(tiny_adder, tmp_path / "other")
    bench.main([str(tiny_adder), str(other), "--lens", "1,2", "--n", "8", "--json", str(tmp_path / "b.json")])
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| run | 1 | 2 |" and table[-1].startswith("| median |")
    assert set(json.loads((tmp_path / "b.json").read_text())["results"]) == {str(tiny_adder), str(other)}
