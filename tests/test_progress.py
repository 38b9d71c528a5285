"""The training bar under a wall-clock budget: steps, minutes of the budget, and what is left in words."""

from arith.train import budget_text, train
from tests.test_train import TINY


def test_budget_text_reads_at_a_glance():
    assert budget_text(1234, 270, 9) == "step 1,234 · 4.5 / 9 min · about 5 min left"
    assert budget_text(50000, 600, 1440) == "step 50,000 · 10.0 / 1440 min · about 23 h 50 min left"
    assert budget_text(7, 500, 9) == "step 7 · 8.3 / 9 min · under a minute left"


def test_wall_clock_bar_shows_steps_and_budget(compose, tmp_path, capsys):
    overrides = [*TINY, "train.progress=true", "train.budget_minutes=0.02", f"runs_root={tmp_path}"]
    train(compose(overrides))
    err = capsys.readouterr().err
    assert "/ 0.02 min · under a minute left" in err and "step " in err
    assert "s/s" not in err, "no seconds-per-second rate"
