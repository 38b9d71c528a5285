"""`Run.solve_many` and `python -m arith.solve --file`: batched answers, the same as `solve` one by one."""

from __future__ import annotations

import csv
import io
import random
import warnings

import pytest
import torch

import arith
from arith.data.tasks import task_for
from arith.errors import ArithError, ConfigError, DataError
from arith.eval import answer as answer_mod
from arith.eval.reach import UntrainedPositionsWarning
from arith.model import ABS_POS, REL_POS
from arith.solve import main as solve_main
from tests import test_task_main_jobs

subtracter = test_task_main_jobs.subtracter  # the fixture: a tiny one-digit subtracter, scratchpad format


def problems(op: str, n: int, longest: int, seed: int = 0) -> list[str]:
    """n problems with operands of random lengths 1..longest (most prompt lengths hold several answer lengths)."""
    rng = random.Random(seed)

    def number() -> str:
        digits = rng.randint(1, longest)
        return str(rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits))

    return [f"{number()}{op}{number()}" for _ in range(n)]


def shown(answer) -> str:
    """An answer, or its error as text (errors compare by type and message)."""
    return f"{type(answer).__name__}: {answer}" if isinstance(answer, ArithError) else answer


def one_by_one(run, problems: list[str], **kwargs) -> list[str]:
    out = []
    for p in problems:
        try:
            out.append(run.solve(p, **kwargs))
        except ArithError as e:
            out.append(shown(e))
    return out


def batched(run, problems: list[str], batch_size: int = 7, **kwargs) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        return [shown(a) for a in run.solve_many(problems, batch_size=batch_size, errors="return", **kwargs)]


@pytest.mark.parametrize(
    "settings",
    [{}, {"vote_ks": [0, 1, 2]}, {"vote_ks": [0, 1, 2], "vote_mode": "logits"}, {"row_window": 1}],
    ids=["greedy", "vote", "logits-vote", "window"],
)
def test_solve_many_equals_solve_problem_by_problem(tiny_adder, settings):
    run = arith.load(tiny_adder)
    todo = problems("+", 60, longest=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        expected = one_by_one(run, todo, **settings)
    assert batched(run, todo, **settings) == expected
    assert batched(run, todo, batch_size=1, **settings) == expected
    if not settings:
        assert [run.solve(f"{a}+{b}") for a, b in [(3, 4), (9, 9)]] == ["7", "18"]
        assert batched(run, ["3+4", "9+9"]) == ["7", "18"]


def test_the_window_changes_answers_alike(tiny_adder):
    """row_window reaches the batched decode too (it changes this model's answers)."""
    run = arith.load(tiny_adder)
    todo = problems("+", 30, longest=4, seed=1)
    assert batched(run, todo, row_window=1) != batched(run, todo)


def test_solve_many_on_a_scratchpad_subtraction_with_negative_differences(subtracter):
    run = arith.load(subtracter)
    todo = ["3-8", "0-9", "7-2", "5-5", *problems("-", 40, longest=3, seed=2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        for show_work in (False, True):
            expected = one_by_one(run, todo, show_work=show_work)
            assert batched(run, todo, show_work=show_work) == expected
    assert batched(run, todo[:4]) == ["-5", "-9", "5", "0"]
    assert len(batches_seen(run, todo, batch_size=64)) < len(prompt_lengths(run, todo))  # mixed batches
    assert run.solve_many(["3-8"], show_work=True) == [
        "(a - b) mod 10^1 = 5 (borrows from the right); sign -; answer -5"
    ]


@pytest.mark.parametrize("settings", [{}, {"vote_ks": [0, 1, 2]}], ids=["greedy", "vote"])
def test_rows_without_an_end_of_sequence_token_are_their_own_errors(tiny_adder, monkeypatch, settings):
    """Two-digit problems get one answer token (no room for EOS) while the others of their prompt length keep
    theirs: each row is cut at its own length, as `solve` decodes it alone (the vote too)."""
    from arith.data.tasks import Addition

    monkeypatch.setattr(Addition, "max_answer_len", lambda self, a, b: 1 if max(a, b) == 2 else max(a, b) + 2)
    run = arith.load(tiny_adder)
    todo = [
        "3+4",
        "12+345",
        "1+2345",
        "12+3",
        "12+34",
        "1+234",
        "123+4",
        *problems("+", 30, longest=4, seed=3),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        expected = one_by_one(run, todo, **settings)
    assert batched(run, todo, **settings) == expected
    assert expected[3] == "DataError: the model gave no answer for '12+3' (no end-of-sequence token)"
    with pytest.raises(DataError, match="no end-of-sequence"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        run.solve_many(todo, **settings)


@pytest.mark.parametrize("vote_ks", [[], [0, 1, 2]])
def test_vote_decode_limits_cut_each_row_as_if_decoded_alone(tiny_adder, vote_ks):
    import numpy as np
    import torch

    from arith.eval.vote import decode

    run = arith.load(tiny_adder)
    spec = task_for(run.cfg.data)
    prompts = torch.as_tensor(
        np.stack([run.tok.encode(spec.prompt(p)) for p in ["3+4", "9+9", "5+8", "0+0"]])
    )
    limits, args = [1, 2, 3, 6], dict(eos_id=run.tok.eos_id, pad_id=run.tok.pad_id, vote_ks=vote_ks)
    together = decode(run.model, prompts, max_new=6, limits=limits, **args)
    for row, prompt, n in zip(together.tolist(), prompts, limits):
        alone = decode(run.model, prompt[None], max_new=n, **args)[0].tolist()
        assert row == alone + [run.tok.pad_id] * (6 - n)


def test_errors_return_in_place_or_raise_the_first(tiny_adder):
    run = arith.load(tiny_adder)
    todo = ["3+4", "12a+3", "1" * 40 + "+1", "9+9", 5]
    got = run.solve_many(todo, errors="return")
    assert got[0] == "7" and got[3] == "18"
    assert isinstance(got[1], DataError) and "cannot read '12a+3'" in str(got[1])
    assert isinstance(got[2], ConfigError) and "max_pos" in str(got[2])
    assert isinstance(got[4], DataError)
    with pytest.raises(DataError, match="12a"):
        run.solve_many(todo)
    with pytest.raises(ConfigError, match="distinct"):
        run.solve_many(["3+4"], vote_ks=[1, 1], errors="return")  # a setting fails the whole call
    with pytest.raises(ValueError, match="errors="):
        run.solve_many(["3+4"], errors="ignore")
    with pytest.raises(TypeError, match="vote_kz"):
        run.solve_many(["3+4"], vote_kz=[1])
    assert run.solve_many([]) == []


def test_a_batch_that_fails_is_decoded_row_by_row(tiny_adder, monkeypatch):
    """A row past the position table while decoding stops its batch: the others are decoded alone and answered."""
    run = arith.load(tiny_adder)
    real = answer_mod._decode
    bad = list(run.tok.encode(task_for(run.cfg.data).prompt("7+7")))

    def decode(run_, s, reads):
        if any(list(r.ids) == bad for r in reads):
            raise ConfigError("past the table")
        return real(run_, s, reads)

    monkeypatch.setattr(answer_mod, "_decode", decode)
    got = run.solve_many(["3+4", "7+7", "2+2", "12+3"], errors="return")
    alone = [shown(run.solve(p)) for p in ("3+4", "2+2", "12+3")]  # what each row gives by itself
    assert [shown(a) for a in got] == [alone[0], "ConfigError: past the table", *alone[1:]]


def test_one_warning_a_call(tiny_adder):
    run = arith.load(tiny_adder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.solve_many(["11111+11111", "111111+111111", "3+4"])
    found = [w for w in caught if issubclass(w.category, UntrainedPositionsWarning)]
    assert len(found) == 1 and found[0].filename == __file__


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_file_command_answers_every_line_and_reports_the_malformed(tiny_adder, tmp_path, capsys):
    src = tmp_path / "problems.txt"
    src.write_text("3+4\n12a+3\n\n 9+9 \n" + "1" * 40 + "+1\n8+7\n")
    out = tmp_path / "answers.csv"
    assert solve_main([str(tiny_adder), "--file", str(src), "--out", str(out), "--batch-size", "2"]) == 0
    rows = read_csv(out.read_text())
    assert [(r["problem"], r["answer"]) for r in rows] == [
        ("3+4", "7"),
        ("12a+3", ""),
        ("9+9", "18"),
        ("1" * 40 + "+1", ""),
        ("8+7", "15"),
    ]
    assert "cannot read '12a+3'" in rows[1]["error"] and "max_pos" in rows[3]["error"]
    assert not rows[0]["error"] and not rows[4]["error"]
    assert "2 of 5 problems not answered" in capsys.readouterr().err


def test_file_command_reads_stdin_and_writes_stdout_with_the_settings(tiny_adder, capsys, monkeypatch):
    run = arith.load(tiny_adder)
    monkeypatch.setattr("sys.stdin", io.StringIO("8+7\n2+2\n1234+567\n"))
    assert solve_main([str(tiny_adder), "--file", "-", "--vote-ks", "0,1,2", "--row-window", "1"]) == 0
    out, err = capsys.readouterr()
    rows = read_csv(out)
    assert err.count("warning: evaluation reads abacus position") == 1  # 1234+567 reads untrained rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        expected = [run.solve(p, vote_ks=[0, 1, 2], row_window=1) for p in ("8+7", "2+2", "1234+567")]
    assert [r["answer"] for r in rows] == expected and not any(r["error"] for r in rows)


@pytest.mark.parametrize(
    "argv, needle",
    [([], "give a problem"), (["3+4", "--file", "-"], "not both"), (["3+4", "--out", "x.csv"], "--out")],
)
def test_file_command_wants_one_problem_or_a_file(tiny_adder, capsys, argv, needle):
    with pytest.raises(SystemExit) as stop:
        solve_main([str(tiny_adder), *argv])
    assert stop.value.code == 2 and needle in capsys.readouterr().err


def test_file_command_names_a_missing_file(tiny_adder, tmp_path, capsys):
    assert solve_main([str(tiny_adder), "--file", str(tmp_path / "none.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read") and "none.txt" in err


# ------------------------------------------------------------------ mixed prompt lengths: left padding
def _tiny_run(name: str, model: list[str], root, steps: int = 600):
    """The session's tiny adder (tests/conftest.py) with other model keys, on 1-2 digits: no checkpoints, EMA or
    selection (5-8 s)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arith import schema
    from arith.train import train
    from tests.conftest import CONFIG_DIR, TINY_ADDER

    schema.register()
    keys = {o.split("=")[0] for o in model} | {"name", "train.steps", "data.max_len"}
    drop = ("train.save_every_steps=", "train.ema=", "train.select_")
    kept = [o for o in TINY_ADDER if o.split("=")[0] not in keys and not o.startswith(drop)]
    overrides = [*kept, *model, "data.max_len=2", f"train.steps={steps}", f"name={name}", f"runs_root={root}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return train(hydra_compose("pretrain", overrides=overrides))


# the addition main job's model (+experiment=quickstart) shrunk: Abacus, a row window, cyclic rows, looped
MAIN_JOB = [
    "model.block=post_ln",
    "model.layers=1",
    "model.recurrences=2",
    "model.input_injection=add",
    "model.abs_pos=abacus",
    "model.row_window=2",
    "model.row_period=8",
    "model.max_k=7",
    "model.eval_k=2",
]
# positions by absolute token index: learned rows, and FIRE (its bias normalizes by the query's position)
ABSOLUTE = ["model.abs_pos=learned", "model.rel_pos=fire"]


@pytest.fixture(scope="module")
def main_job_adder(tmp_path_factory):
    return _tiny_run("tiny_main_job", MAIN_JOB, tmp_path_factory.mktemp("main_job_runs"))


@pytest.fixture(scope="module")
def absolute_adder(tmp_path_factory):
    return _tiny_run("tiny_absolute", ABSOLUTE, tmp_path_factory.mktemp("absolute_runs"))


def batches_seen(run, todo: list[str], **kwargs) -> list[tuple[int, int, list[int]]]:
    """solve_many's batches as decoded: (rows, width, left PADs per row) of every `decode` call (a wrapper)."""
    seen, real = [], answer_mod.decode

    def decode(model, ids, *args, pad=None, **kw):
        seen.append((*ids.shape, [0] * len(ids) if pad is None else pad.tolist()))
        return real(model, ids, *args, pad=pad, **kw)

    answer_mod.decode = decode
    try:
        batched(run, todo, **kwargs)
    finally:
        answer_mod.decode = real
    return seen


def forwards(run, todo: list[str], steps: bool = False, **kwargs) -> list[tuple[int, int, list[int]]]:
    """solve_many's forward passes: (rows, width, left PADs per row) of every prefill (start 0), or of every
    decoding step (steps=True) (a counter around the model's forward)."""
    seen = []

    def count(module, args, kwargs):
        if bool(kwargs.get("start", 0)) == steps:
            pad = kwargs.get("pad")
            seen.append((*args[0].shape, [0] * len(args[0]) if pad is None else pad.tolist()))

    hook = run.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        batched(run, todo, **kwargs)
    finally:
        hook.remove()
    return seen


def prompt_lengths(run, todo: list[str]) -> set[int]:
    spec = task_for(run.cfg.data)
    return {len(run.tok.encode(spec.prompt(p))) for p in todo}


MIXED = [{}, {"vote_ks": [0, 2, 5]}, {"vote_ks": [1, 2, 3], "vote_mode": "logits"}, {"row_window": 1}]


def mixed_equals_solve(run, todo: list[str], settings: dict, batch_sizes) -> None:
    """solve_many's answers in mixed-length batches of each size == solve's one by one; the model answers, and
    not all alike."""
    assert run.model.pads_left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        expected = one_by_one(run, todo, **settings)
    for size in batch_sizes:
        assert batched(run, todo, batch_size=size, **settings) == expected
    assert len({a for a in expected if "Error" not in a}) > 10


@pytest.mark.parametrize("settings", MIXED, ids=["greedy", "vote", "logits-vote", "window1"])
def test_mixed_length_batches_of_the_main_job_model_equal_solve(main_job_adder, settings):
    run = arith.load(main_job_adder)
    mixed_equals_solve(run, problems("+", 60, longest=9, seed=4), settings, batch_sizes=(64, 9))


@pytest.mark.parametrize(
    "settings",
    [{}, {"attn_scale": 1.3, "attn_scale_mode": "log"}, {"row_window": 1}],
    ids=["greedy", "log-temperature", "window1"],
)
def test_mixed_length_batches_of_absolute_positions_equal_solve(absolute_adder, settings):
    """Learned rows and FIRE count each row's positions from its first real token (per-row offsets)."""
    run = arith.load(absolute_adder)
    todo = problems("+", 50, longest=7, seed=5)
    mixed_equals_solve(run, todo, settings, batch_sizes=(64,))
    assert len(batches_seen(run, todo, batch_size=64, **settings)) < len(prompt_lengths(run, todo))


def test_batches_really_mix_prompt_lengths(main_job_adder):
    run = arith.load(main_job_adder)
    todo = problems("+", 60, longest=9, seed=4)
    lengths = prompt_lengths(run, todo)
    seen = batches_seen(run, todo, batch_size=64)
    assert len(lengths) >= 10 and len(seen) < len(lengths)
    assert sum(rows for rows, _, _ in seen) == len(todo)
    assert any(len(set(pads)) > 2 for _, _, pads in seen)  # rows of 3+ prompt lengths in one batch
    assert all(min(pads) == 0 for _, _, pads in seen)  # left-padded to the batch's longest, no wider
    assert all(max(pads) <= max(answer_mod.SPREAD, width // 2) for _, width, pads in seen)
    assert max(rows for rows, _, _ in batches_seen(run, todo, batch_size=16)) == 16  # batch_size still caps


def test_a_mixed_batch_prefills_its_prompts_in_groups_of_like_lengths(main_job_adder):
    """Each group of a batch is prefilled without the PADs all its rows have: its longest prompt unpadded, its
    shortest at least PREFILL_SPREAD of it; the answers stay solve's (`mixed_equals_solve`)."""
    from arith.eval.decode import PREFILL_SPREAD

    run = arith.load(main_job_adder)
    todo = problems("+", 60, longest=9, seed=4)
    (batch,) = batches_seen(run, todo, batch_size=64)
    groups = forwards(run, todo, batch_size=64)
    assert len(groups) > 1 and sum(rows for rows, _, _ in groups) == batch[0] == len(todo)
    assert all(min(pads) == 0 and width - max(pads) >= PREFILL_SPREAD * width for _, width, pads in groups)
    assert sorted(width - p for _, width, pads in groups for p in pads) == sorted(
        batch[1] - p for p in batch[2]
    )


def test_a_model_without_left_padding_is_batched_one_prompt_length_at_a_time(tiny_adder, monkeypatch):
    run = arith.load(tiny_adder)
    todo = problems("+", 40, longest=5, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        expected = one_by_one(run, todo)
    monkeypatch.setattr(run.model, "pads_left", False)
    seen = batches_seen(run, todo, batch_size=64)
    assert len(seen) == len(prompt_lengths(run, todo)) and all(not any(p) for _, _, p in seen)
    assert batched(run, todo, batch_size=64) == expected


def test_mixed_batches_of_a_learned_table_stay_inside_it():
    """A learned position table: a batch of the longest prompt and the longest answer together would read rows
    past the table, so `_batches` cuts it there (each row alone fits); Abacus-like tables are not cut."""
    import numpy as np

    from arith.data.spec import Cell

    def read(n_prompt, n_new):
        return answer_mod._Read(np.zeros(n_prompt, dtype=np.int64), Cell(1, 1), n_new)

    reads = {0: read(30, 40), 1: read(40, 5), 2: read(42, 30)}
    assert answer_mod._batches(reads, 64, mixed=True) == [[0, 1, 2]]
    assert answer_mod._batches(reads, 64, mixed=True, max_tokens=64) == [[0], [1], [2]]
    assert answer_mod._batches(reads, 64, mixed=True, max_tokens=72) == [[0], [1, 2]]
    assert answer_mod._batches(reads, 64, mixed=False, max_tokens=64) == [[0], [1], [2]]


# every pair of an absolute and a relative scheme that claim left_pad (all of today's), and the model's extras
ABS = [name for name, cls in ABS_POS.items() if cls.left_pad]
REL = [name for name, cls in REL_POS.items() if cls.left_pad]
PADDED_KINDS = [dict(abs_pos=a, rel_pos=r) for a in ABS for r in REL] + [
    dict(abs_pos="abacus", layers=1, recurrences=3, injection="add", row_window=2, row_period=8, max_k=7,
         block="post_ln"),
    dict(abs_pos="abacus", opener_embedding=True, number_window=1, row_window=1, block="parallel"),
    dict(abs_pos="learned", rel_pos="fire", fire_max_length=48, layers=1, recurrences=2, injection="add"),
]  # fmt: skip


@pytest.mark.parametrize("log_temperature", [False, True], ids=["plain", "log-temperature"])
@pytest.mark.parametrize("kind", PADDED_KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_a_left_padded_row_gives_the_logits_of_the_row_alone(kind, log_temperature):
    """Full forward and KV-cached decoding (a prompt chunk, then one token at a time), for every scheme that
    claims `left_pad`; the same rows without `pad` (PADs seen, positions from the first PAD) differ."""
    from arith.model.attention import Temperature, set_attn_temperature
    from tests.test_decode import TOK, make

    model = make(**kind).eval()
    assert model.pads_left
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from the init's near-uniform attention
    set_attn_temperature(model, Temperature(1.5, "log", "all", 5) if log_temperature else None)
    rows = [TOK.encode(t) for t in ("21+543=7", "9+9=", "12345+6789=1", "0+12=2")]
    width = max(map(len, rows))
    pad = torch.tensor([width - len(r) for r in rows])
    ids = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    with torch.no_grad():
        full = model(ids, k=1, pad=pad)
        cache, pieces = model.new_cache(), []
        for start, end in ((0, width - 2), (width - 2, width - 1), (width - 1, width)):
            pieces.append(model(ids[:, start:end], k=1, cache=cache, start=start, pad=pad))
        cached = torch.cat(pieces, dim=1)
        blind = model(ids, k=1)
        for b, row in enumerate(rows):
            alone = model(torch.tensor([row]), k=1)[0]
            torch.testing.assert_close(full[b, pad[b] :], alone, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cached[b, pad[b] :], alone, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(blind[1, pad[1] :], model(torch.tensor([rows[1]]), k=1)[0], atol=1e-3)


def test_a_row_that_finishes_far_earlier_than_its_batch_keeps_solves_answer(main_job_adder):
    """'3+4' and '1+1' (a digit and EOS) in a batch of problems of up to 9 digits: they leave it early."""
    run = arith.load(main_job_adder)
    todo = ["3+4", *problems("+", 12, longest=9, seed=7), "1+1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPositionsWarning)
        expected = one_by_one(run, todo)
    assert batched(run, todo, batch_size=64) == expected and expected[0] == "7"
    steps = forwards(run, todo, steps=True, batch_size=64)
    assert steps[0][0] == len(todo) and min(rows for rows, _, _ in steps) < len(todo)  # rows left


def test_cells_are_probed_only_where_a_problem_could_pass_the_table():
    """Cyclic Abacus rows (model.row_period) and NoPE hold any length: no cell needs its problems sampled."""
    from arith.schema import ModelConfig

    sizes = dict(width=32, heads=4, ffn=64, layers=1, max_pos=16, max_k=4)
    assert not answer_mod._may_overflow(ModelConfig(abs_pos="abacus", row_period=8, **sizes), 4)
    assert not answer_mod._may_overflow(ModelConfig(abs_pos="none", **sizes), 0)
    assert answer_mod._may_overflow(ModelConfig(abs_pos="abacus", **sizes), 4)
    assert answer_mod._may_overflow(ModelConfig(abs_pos="learned", **sizes), 0)
