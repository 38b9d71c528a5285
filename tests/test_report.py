"""Run reports from tiny real runs (train, evaluate, report), and the TensorBoard scalars of a resumed run."""

import importlib.util
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import pytest

import arith
from arith import checkpoint
from arith.eval.runner import run_grid
from arith.metrics import read_metrics
from arith.plots import CURVES, curves_figure
from arith.tiny import tiny_overrides
from arith.train import train
from tests.conftest import ROOT

TINY = tiny_overrides("model.max_k=3", "data.max_len=2", "train.threads=1", "train.log_every=5")
VOID = {"meta", "img", "br", "hr", "link", "input"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs: ``evaluated`` (checkpoints 20 and 30, a grid, ``best`` naming 20) and ``bare``
    (trained, never evaluated). A few seconds on one core."""
    from hydra import compose, initialize_config_dir

    from arith import schema
    from tests.conftest import CONFIG_DIR

    schema.register()
    root = tmp_path_factory.mktemp("runs")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        a = train(
            compose(
                "pretrain",
                [*TINY, f"runs_root={root}", "name=evaluated", "train.steps=30", "train.save_every_steps=20"],
            )
        )
        b = train(
            compose("pretrain", [*TINY, f"runs_root={root}", "name=bare", "train.steps=15", "train.lr=1e-3"])
        )
        run_grid(compose("eval", [f"run={a}", "eval.a_lens=[1,3]", "eval.n_per_cell=8"]), sorting=False)
    (a / "checkpoints" / "best").write_text("20")  # as selection writes it: a folder name
    return a, b


class Page(HTMLParser):
    """Headings, image sources and the text of an HTML page; fails on a tag closed out of order."""

    def __init__(self, text: str):
        super().__init__()
        self.stack, self.headings, self.images, self.text, self._heading = [], [], [], [], None
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags {self.stack}"

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = ""

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("h1", "h2", "h3", "h4"):
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading is not None:
            self._heading += data


def report_cli(*args):
    """scripts/report.py as a command: (exit code, stdout, stderr)."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return res.returncode, res.stdout, res.stderr


_spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
report_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_script)


def report(capsys, *args):
    """scripts/report.py's main in this process (no second torch import): (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = report_script.main([str(a) for a in args])
    except SystemExit as e:  # user_errors: one line on stderr, exit 2
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def read_page(path: Path) -> Page:
    assert path.name == "report.html" and path.is_file()
    page = Page(path.read_text())
    for src in page.images:  # every image referenced is beside the page and a real PNG
        image = path.parent / src
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
        assert min(mpimg.imread(image).shape[:2]) > 200
    return page


def test_report_of_an_evaluated_run_has_every_section(runs):
    run, _ = runs
    rc, out, err = report_cli(run)
    assert rc == 0, err
    path = Path(out.strip())
    assert path == run / "report" / "report.html"
    page = read_page(path)
    text = " ".join(page.text)
    headings = " | ".join(page.headings)
    for needle in (
        "Config: ",
        "keys differ from the defaults",
        "Checkpoints",
        "Training curves",
        "Evaluation",
    ):
        assert needle in headings, needle
    assert sorted(page.images) == ["curves.png", "heatmap_addition.png"]
    assert f"{arith.load(run).model.num_params():,}" in text  # parameters, from the checkpoint
    # the checkpoints table: folder 20 named by best, 30 by latest
    html = path.read_text()
    assert "<tr><td>20</td><td>best</td></tr>" in html and "<tr><td>30</td><td>latest</td></tr>" in html
    # the config section puts train.steps (30 against the default null) among the changed keys
    assert "<tr><td>train.steps</td><td>30</td><td>null</td></tr>" in html
    # the accuracy-by-length table: lengths 1..3, 1 and 2 trained
    assert "length L" in text and "made with checkpoint=" in headings  # the grid records its settings


def test_two_runs_are_overlaid_and_a_run_without_evaluation_says_so(runs, tmp_path, capsys):
    evaluated, bare = runs
    rc, out, err = report(capsys, evaluated, bare, f"out={tmp_path / 'cmp'}")
    assert rc == 0, err
    page = read_page(Path(out.strip()))
    assert "Comparison" in page.headings and "Training curves, overlaid" in page.headings
    assert {"curves.png", "compare.png", "run0_heatmap_addition.png"} <= set(page.images)
    assert not any(src.startswith("run1_") for src in page.images)  # the bare run has no heatmap
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "<tr><td>train.lr</td><td>0.003</td><td>0.001</td></tr>" in html  # keys that differ between runs
    assert "1 of the runs have no evaluation yet" in html

    # the overlay itself: every panel draws one line per run, labelled with the run
    histories = {"evaluated": read_metrics(evaluated), "bare": read_metrics(bare)}
    fig = curves_figure(histories)
    drawn = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in drawn] == [title for key, title, _ in CURVES if key != "select_mean"]
    for ax in drawn:
        assert [line.get_label() for line in ax.lines] == ["evaluated", "bare"]
    assert drawn[0].get_yscale() == "log"  # the loss

    rc, out, err = report(capsys, bare)
    assert rc == 0, err
    page = read_page(Path(out.strip()))
    assert page.images == ["curves.png"]
    assert "Evaluation" in page.headings and "No evaluation yet" in " ".join(page.text)


def test_selection_rows_get_their_panel(runs, tmp_path):
    """Rows of the selection kind (no loss) share metrics.jsonl with the training rows."""
    run, _ = runs
    rows = read_metrics(run) + [
        {"step": 10, "select": {"3": 0.25, "4": 0.0}, "select_mean": 0.125},
        {"step": 30, "select": {"3": 0.5, "4": 0.25}, "select_mean": 0.375},
    ]
    fig = curves_figure({"evaluated": rows})
    (ax,) = [ax for ax in fig.axes if ax.get_title() == "selection accuracy"]
    assert [line.get_label() for line in ax.lines] == ["L=3", "L=4", "mean"]
    assert list(ax.lines[2].get_ydata()) == [0.125, 0.375]
    (loss,) = [ax for ax in fig.axes if ax.get_title() == "loss"]
    assert list(loss.lines[0].get_xdata()) == [r["step"] for r in read_metrics(run)]  # selection rows skipped


def test_report_errors_are_one_line(tmp_path, capsys):
    for args, needle in [
        ([tmp_path / "nowhere"], "not a run directory"),
        ([tmp_path, "colour=red"], "unknown argument 'colour=red'"),
        ([], "at least one run"),
    ]:
        rc, out, err = report(capsys, *args)
        assert rc == 2 and not out
        assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "nowhere").exists()


def test_tensorboard_logs_the_metrics_and_resume_replaces_the_steps_after_the_checkpoint(compose, tmp_path):
    pytest.importorskip(
        "tensorboard", reason="the TensorBoard test needs the extra: pip install 'arith[tensorboard]'"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [*TINY, f"runs_root={tmp_path}", "name=tb", "train.tensorboard=true", "train.log_every=1"]
    run = train(compose([*overrides, "train.steps=4", "train.save_every_steps=2"]))
    # as if killed after step 4 was logged but before its checkpoint: resume from 2, log 3 and 4 again
    shutil.rmtree(run / "checkpoints" / "4")
    (run / "checkpoints" / checkpoint.LATEST).write_text("2")
    first = {r["step"]: r for r in read_metrics(run)}
    train(compose([*overrides, "train.steps=4"]))
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert (
        rows[1] == first[2] and rows[3]["elapsed_s"] != first[4]["elapsed_s"]
    )  # 3, 4 are the second session's

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {
        "loss",
        "lr",
        "grad_norm",
        "tokens",
        "tokens_per_s",
        "useful_tokens",
        "useful_tokens_per_s",
        "elapsed_s",
        "emb_max_abs",
    }
    for tag in tags:
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3, 4], tag  # the first session's 3 and 4 purged
        assert [e.value for e in logged] == pytest.approx([float(r[tag]) for r in rows], rel=1e-6), tag
