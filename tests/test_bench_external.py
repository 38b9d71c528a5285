"""scripts/bench_self_improve.py's problems, made with Python's random: the expected answers agree with the
framework's own checker, in the orientation `task.answer` returns."""

import random
import sys

import pytest

from arith.data.tasks import get_task
from arith.data.tokenizer import LABELS
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench_self_improve as bench  # noqa: E402


def model_output(task, expected: str) -> str:
    """What a right model writes after '=': the reversed answer (sorting's labels are written as they are)."""
    return expected if task.name == "sorting" else expected[::-1]


@pytest.mark.parametrize("cell", [1, 2, 8, (1, 1), (3, 5), (16, 16), (7, 2)])
def test_bitwise_or_problems_are_one_hot_and_their_answers_check(cell):
    task = get_task("bitwise_or")
    a_len, b_len = bench._cell(cell)
    pairs = bench.problems_for(task, cell, 60, 3)
    assert pairs == bench.problems_for(task, cell, 60, 3) and len(pairs) == 60
    for problem, want in pairs:
        a, b = problem.split("+")
        assert (len(a), len(b)) == (a_len, b_len) and (a + b).count("1") == 1
        hot = a if "1" in a else b
        assert len(hot) == min(a_len, b_len)  # the shorter is hot (either when equal)
        assert want == format(int(a, 2) | int(b, 2), f"0{max(a_len, b_len)}b")
        out = model_output(task, want)
        assert task.answer(out) == want  # a perfect model scores 1
        assert task.check(task.prompt(problem) + out)
    if a_len == b_len > 1:  # both operands are hot sometimes, at several indices
        assert {p.index("+") > p.index("1") for p, _ in pairs} == {True, False}
        assert len({w for _, w in pairs}) > 1


def test_bitwise_or_orientation_by_hand():
    task = get_task("bitwise_or")
    assert task.prompt("0100|0000") == "0010+0000="
    assert task.check("0010+0000=0010") and not task.check("0010+0000=0100")
    assert task.answer("0010") == "0100" == format(0b0100 | 0, "04b")


@pytest.mark.parametrize(
    "cell", [(1, 1), (1, 5), (5, 1), (5, 5), (10, 5), (5, 10), (15, 15), (3, len(LABELS))]
)
def test_sorting_problems_mirror_the_generator_and_their_answers_check(cell):
    task = get_task("sorting")
    max_digits, m = cell
    pairs = bench.problems_for(task, cell, 40, 5)
    assert pairs == bench.problems_for(task, cell, 40, 5)
    for problem, want in pairs:
        nums = problem.split(",")
        assert len(nums) == m and max(len(x) for x in nums) == max_digits
        assert all(x == "0" or not x.startswith("0") for x in nums)  # non-zero leading digit
        assert sorted(want.split(",")) == sorted(LABELS[:m])
        out = model_output(task, want)
        assert task.answer(out) == want
        assert task.check(task.prompt(problem) + out)


def test_sorting_labels_ascend_with_ties_by_position():
    assert bench.sorted_labels([503, 7, 14, 7]) == "b,d,c,a"
    task = get_task("sorting")
    prompt = task.prompt("503,7,14,7")
    assert task.check(prompt + "b,d,c,a") and not task.check(prompt + "d,b,c,a")
    with pytest.raises(SystemExit, match="array length"):
        bench.problems_for(task, (2, len(LABELS) + 1), 1, 0)


@pytest.mark.parametrize("name", ["addition", "subtraction", "multiplication"])
@pytest.mark.parametrize("cell", [1, 8, (3, 5), (5, 3)])
def test_integer_problems_check(name, cell):
    task = get_task(name)
    a_len, b_len = bench._cell(cell)
    pairs = bench.problems_for(task, cell, 50, 11)
    assert pairs == bench.problems_for(task, cell, 50, 11)
    for problem, want in pairs:
        a, b = problem.split(task.op)
        assert (len(a), len(b)) == (a_len, b_len)
        assert task.answer(model_output(task, want)) == want
        assert task.check(task.prompt(problem) + model_output(task, want))


def test_subtraction_of_a_larger_number_is_negative():
    task = get_task("subtraction")
    pairs = bench.problems_for(task, (3, 5), 30, 2)
    for problem, want in pairs:
        a, b = map(int, problem.split("-"))
        assert a < b and want == f"-{b - a}" and want.startswith("-") and want[1] != "0"
    assert task.answer("333-") == "-333"


def test_the_diagonal_is_the_benchmark_it_was():
    """--lens L draws exactly the problems the script drew before cells existed."""

    def before(length, n, seed):
        rng = random.Random(f"{seed}-{length}")
        lo, hi = (0 if length == 1 else 10 ** (length - 1)), 10**length - 1
        return [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(n)]

    for length in (1, 2, 8, 24, 64):
        assert bench.problems(length, 30, 2026) == before(length, 30, 2026)
        assert bench.problems(length, 30, 2026) == bench.problems(length, 30, 2026, length)
        pairs = bench.problems_for(get_task("addition"), length, 30, 2026)
        assert pairs == [(f"{a}+{b}", str(a + b)) for a, b in before(length, 30, 2026)]
    assert bench.problems(3, 30, 1) != bench.problems(3, 30, 2)  # the seed matters


def test_cells_parse():
    assert bench.parse_cells("5x5,10x5, 5X10") == [(5, 5), (10, 5), (5, 10)]
    for bad in ("5", "5x", "0x3", "ax3"):
        with pytest.raises(ValueError, match="--cells"):
            bench.parse_cells(bad)


def _carries(a: int, b: int, length: int) -> list[bool]:
    """Whether the sum of the low i + 1 digits carries out, for i = 0 .. length - 2."""
    return [a % 10 ** (i + 1) + b % 10 ** (i + 1) >= 10 ** (i + 1) for i in range(length - 1)]


@pytest.mark.parametrize("length", [1, 2, 8, 40])
def test_carry_heavy_sums_carry_through_every_digit_at_p_1(length):
    task = get_task("addition")
    pairs = bench.problems_for(task, length, 40, 3, carry=1.0)
    assert pairs == bench.problems_for(task, length, 40, 3, carry=1.0)
    for problem, want in pairs:
        a, b = map(int, problem.split("+"))
        assert len(str(a)) == len(str(b)) == length and want == str(a + b)
        assert all(_carries(a, b, length)) and task.check(task.prompt(problem) + want[::-1])
        if length == 1:
            assert a + b >= 10


def test_carry_heavy_sums_at_p_0_carry_from_the_lowest_digit_only_by_force():
    pairs = bench.carry_problems(30, 200, 5, 0.0)
    assert all(_carries(a, b, 30)[0] for a, b in pairs)
    chains = [_carries(a, b, 30).index(False) if not all(_carries(a, b, 30)) else 29 for a, b in pairs]
    assert sum(chains) / len(chains) < 3  # random digits above: short chains
    half = bench.carry_problems(30, 200, 5, 0.5)
    assert sum(c.count(True) for c in (_carries(a, b, 30) for a, b in half)) > sum(
        c.count(True) for c in (_carries(a, b, 30) for a, b in pairs)
    )


def test_carry_heavy_needs_addition_on_the_diagonal_and_a_probability():
    with pytest.raises(SystemExit, match="--carry needs addition"):
        bench.problems_for(get_task("subtraction"), 8, 5, 1, carry=0.5)
    with pytest.raises(SystemExit, match="--carry needs addition"):
        bench.problems_for(get_task("addition"), (8, 5), 5, 1, carry=0.5)
    with pytest.raises(SystemExit, match="probability"):
        bench.carry_problems(8, 5, 1, 1.5)
