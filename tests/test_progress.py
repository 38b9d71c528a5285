"""The training bar: steps, budget minutes and what is left in words; padded and useful token rates."""

from arith.train import budget_text, throughput_text, train
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


def test_bar_shows_useful_tokens_per_second_beside_the_padded_rate(compose, tmp_path, capsys):
    assert throughput_text(41234.4, 33090.6) == "41,234 (useful 33,091)"
    overrides = [*TINY, "train.progress=true", "train.steps=3", "train.log_every=1", f"runs_root={tmp_path}"]
    train(compose(overrides))
    assert "tok_s=" in (err := capsys.readouterr().err) and " (useful " in err
