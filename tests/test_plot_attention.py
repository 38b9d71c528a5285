"""Attention pictures (arith/plots/attention.py, scripts/plot_attention.py, scripts/report.py --attention): the
weights recomputed from what each Attention module saw give back its output to 1e-5 under every position scheme,
rows sum to 1 over the visible keys and are 0 elsewhere (causal, row window), the PNG is written, a bad index is
a one-line error, the summary names operand digits, and the report's section is off by default."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import arith
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.model import build_model, flex
from arith.model.attention import Temperature, set_attn_temperature
from arith.plots import attention
from arith.report import write_report
from tests.conftest import CONFIG_DIR, ROOT, TINY_ADDER
from tests.test_model import cfg_for

TOK = ArithTokenizer.build()
PNG = b"\x89PNG\r\n\x1a\n"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot_script, report_script = _script("plot_attention"), _script("report")


def run_main(capsys, main, *args):
    """A script's main in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # user_errors: one line on stderr, exit 2
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    """A tiny looped run (1 layer x 2 recurrences, input injection) with a row window of 1 and numbers of up to
    3 digits, trained a few steps: its evaluation settings mask keys. About 2 s on one core."""
    from hydra import compose, initialize_config_dir

    from arith import schema
    from arith.train import train

    schema.register()
    torch.manual_seed(0)
    extra = {
        "model.layers": "1",
        "model.recurrences": "2",
        "model.input_injection": "add",
        "model.row_window": "1",
        "data.max_len": "3",
        "train.steps": "4",
        "train.save_every_steps": "0",
        "train.select_every": "0",
        "train.ema": "0",
        "name": "tiny_window",
    }
    overrides = [o for o in TINY_ADDER if o.split("=")[0] not in extra]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    root = tmp_path_factory.mktemp("window_runs")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return train(compose("pretrain", [*overrides, f"runs_root={root}"]))


# ------------------------------------------------------------------------------------------------ reconstruction
KINDS = [
    dict(abs_pos="abacus"),
    dict(abs_pos="none", rel_pos="fire"),
    dict(abs_pos="abacus", rel_pos="rope"),
    dict(abs_pos="none", rel_pos="rerope", rerope_window=4),
    dict(abs_pos="abacus", row_window=1),
    dict(abs_pos="abacus", rel_pos="fire", row_window=1),
    dict(abs_pos="none", rel_pos="rerope", rerope_window=4, row_window=1),
    dict(abs_pos="abacus", layers=1, recurrences=3, injection="add"),
    dict(abs_pos="abacus", block="sas_p"),
    dict(abs_pos="abacus", block="post_ln", attn_logit_scale=1.7),
    dict(abs_pos="abacus", rel_pos="fire", qk_norm=True),
    dict(abs_pos="abacus", rel_pos="fire", row_window=1, attn_log_n=True),
    dict(abs_pos="abacus", rel_pos="fire", row_window=1, diff_bias=True),
    dict(
        abs_pos="none", rel_pos="fire", diff_bias=True
    ),  # no window: FlexAttention's bias needs its causal mask
    dict(abs_pos="none", rel_pos="rerope", rerope_window=4, diff_bias=True),
]


CASES = [(kind, extra) for kind in KINDS for extra in ("plain", "temperature")]
CASES += [
    (kind, "flex") for kind in KINDS if kind.get("rel_pos") == "fire"
]  # FlexAttention: FIRE's bias only


@pytest.mark.parametrize(
    "kind,extra", CASES, ids=lambda c: "-".join(map(str, c.values())) if isinstance(c, dict) else c
)
def test_recomputed_weights_give_back_the_module_output(kind, extra):
    torch.manual_seed(0)
    model = build_model(cfg_for(**kind), TOK).eval()
    for name, p in model.named_parameters():
        if "log_n_gain" in name:  # model.attn_log_n's gains start at 0, a factor of 1: give them one to show
            p.data.fill_(0.5)
        if name.endswith("diff.slopes") or name.endswith("diff.knot"):  # model.diff_bias's start at 0 too
            p.data.uniform_(-2, 2)
    if extra == "temperature":
        set_attn_temperature(model, Temperature(1.3, "const", "first"))
    if extra == "flex":
        flex.set_attention_impl(model, "flex")
    ids = torch.tensor([TOK.encode("4321+765=5"), TOK.encode("12+99876=0")])
    with torch.no_grad():
        reference = model(ids)
        with attention.recording(model) as calls:
            assert torch.equal(model(ids), reference)  # the hooks change nothing
    assert len(calls) == model.cfg.layers * model.cfg.recurrences
    assert [(c.layer, c.recurrence) for c in calls] == [
        (i, r) for r in range(model.cfg.recurrences) for i in range(model.cfg.layers)
    ]
    for c in calls:
        with torch.no_grad():
            probs, visible, v = attention.attention_probs(c.module, c.x, c.inp)
            rebuilt = attention.attended_output(c.module, c.x, probs, v)
        torch.testing.assert_close(rebuilt, c.out, rtol=0, atol=1e-5)
        assert torch.all(probs[~visible] == 0)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=0, atol=1e-5)
    hooks = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooks  # removed on exit


# ------------------------------------------------------------------------------------------------ one problem
def test_weights_of_a_windowed_run_sum_to_one_and_masked_keys_are_zero(windowed):
    run = arith.load(windowed)
    maps = attention.capture(run, "123+456")
    assert maps.settings.row_window == 1 and maps.dims == (1, 2, 2)  # the run's evaluation settings
    T = len(maps.tokens)
    assert maps.probs.shape == (2, 1, 2, T, T) and maps.tokens[:8] == list("321+654=")
    window = maps.causal & ~maps.visible
    assert window.any() and not (maps.visible & ~maps.causal).any()
    # digit indices 1 2 3 0 1 2 3 0: "4" (b2) sees "2" (a1), not "3" (a0); "6" (b0) not "1" (a2); "=" only a0, b0
    assert window[6, 0] and not window[6, 1] and window[4, 2] and not window[5, 0]
    assert window[7].tolist() == [False, True, True, False, False, True, True, False] + [False] * (T - 8)
    hidden = np.broadcast_to(~maps.visible, maps.probs.shape)
    assert np.all(maps.probs[hidden] == 0)
    np.testing.assert_allclose(maps.probs.sum(-1), 1.0, atol=1e-5)
    assert maps.answer == run.solve("123+456")  # the greedy answer solve gives with the same settings


def test_weights_reproduce_the_trained_runs_outputs_with_their_settings(windowed, tiny_adder):
    for run_dir, problem in ((windowed, "12+345=753"), (tiny_adder, "3+4=7")):
        run = arith.load(run_dir)
        settings = attention.attention_settings(run)
        ids = torch.tensor([TOK.encode(problem)])
        with torch.no_grad(), eval_settings.applied(run, settings), attention.recording(run.model) as calls:
            run.model(ids, settings.recurrences, k=settings.k)
        assert len(calls) == len(run.model.layers) * settings.recurrences
        for c in calls:
            with torch.no_grad():
                probs, _, v = attention.attention_probs(c.module, c.x, c.inp)
                rebuilt = attention.attended_output(c.module, c.x, probs, v)
            torch.testing.assert_close(rebuilt, c.out, rtol=0, atol=1e-5)
        assert run.model.row_window == run.cfg.model.row_window  # settings restored


def test_labels_name_operand_and_answer_digits():
    texts = list("321+654=975") + ["EOS"]
    digit = [t.isdigit() for t in texts]
    labels = attention.token_labels(texts, digit, 8)
    assert labels == ["3 a0", "2 a1", "1 a2", "+", "6 b0", "5 b1", "4 b2", "=", "9 y0", "7 y1", "5 y2", "EOS"]
    sorting = attention.token_labels(list("a:3,b:41="), [c.isdigit() for c in "a:3,b:41="], 9)
    assert sorting == ["a", ":", "3 a0", ",", "b", ":", "4 b0", "1 b1", "="]


def test_summary_names_the_operand_digits(tiny_adder):
    maps = attention.capture(arith.load(tiny_adder), "3+4")
    assert maps.labels[:4] == ["3 a0", "+", "4 b0", "="]
    lines = attention.summary_lines(maps)
    assert "3+4 = " in lines[0] and "k=" in lines[0] and "mean over 2 heads" in lines[1]
    writes = [line for line in lines if line.startswith("writes")]
    assert len(writes) == len(maps.written) and writes[0].startswith(f"writes {maps.written[0].split()[-1]}")
    assert "from query 3 '='" in writes[0]
    per_layer = [line for line in lines if line.startswith("    layer")]
    assert len(per_layer) == 2 * len(writes)  # 2 layers, last recurrence
    assert all("a0 '3'" in line and "b0 '4'" in line and "operand digits" in line for line in per_layer)
    every = attention.summary_lines(maps, per_recurrence=True, top=1)
    assert sum("recurrence 0:" in line for line in every) == 2 * len(writes)


# ------------------------------------------------------------------------------------------------ the picture
def test_figure_draws_every_panel_or_only_the_selected_one(windowed):
    maps = attention.capture(arith.load(windowed), "12+345")
    panels = [ax for ax in attention.attention_figure(maps).axes if ax.get_title()]
    assert len(panels) == 1 * 2 * 2
    sel = attention.select(maps.dims, layer=0, recurrence=1, head=0)
    (only,) = [ax for ax in attention.attention_figure(maps, sel).axes if ax.get_title()]
    assert only.get_title() == "layer 0 · recurrence 1 · head 0"
    ticks = [t.get_text() for t in only.get_xticklabels()]
    assert ticks[:4] == ["2 a0", "1 a1", "+", "5 b0"] and len(ticks) == len(maps.tokens)
    assert len(only.images) == 2  # the weights, and the grey row-window overlay
    assert attention.default_path(windowed, "12+345", sel, maps.dims).name == "attention_12+345_R1_H0.png"


def test_script_writes_the_png_and_prints_the_summary(windowed, tmp_path, capsys):
    out = tmp_path / "pics" / "attn.png"
    rc, stdout, err = run_main(capsys, plot_script.main, windowed, "123+456", "--out", out, "--head", "1")
    assert rc == 0, err
    assert out.read_bytes()[:8] == PNG
    lines = stdout.splitlines()
    assert lines[-1] == str(out) and "row window 1" in lines[0]
    assert any("a0 '3'" in line or "b0 '6'" in line for line in lines)
    rc, stdout, err = run_main(capsys, plot_script.main, windowed, "1+2", "--out", tmp_path / "a.svg")
    assert rc == 0 and (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--layer", "1"], "--layer 1 is out of range: the model has 1 layers (only 0)"),
        (["--recurrence", "2"], "--recurrence 2 is out of range: the model has 2 recurrences (0..1)"),
        (["--head", "-1"], "--head -1 is out of range: the model has 2 heads (0..1)"),
        (["--out", "x.bmpx"], "cannot write a .bmpx picture"),
        (["--row-window", "-2"], "row_window=-2 must be an integer >= 0"),
    ],
)
def test_bad_choices_are_one_line_errors(windowed, tmp_path, capsys, args, needle):
    if "--out" in args:
        args = ["--out", str(tmp_path / args[1])]
    rc, out, err = run_main(capsys, plot_script.main, windowed, "12+34", *args)
    assert rc == 2 and not out
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1, err


def test_a_problem_it_cannot_read_is_a_one_line_error(windowed, capsys):
    rc, out, err = run_main(capsys, plot_script.main, windowed, "12*34")
    assert rc == 2 and err.startswith("error: cannot read '12*34'") and len(err.strip().splitlines()) == 1


def test_select_checks_every_index():
    assert attention.select((2, 3, 4)) == attention.Selection([0, 1], [0, 1, 2], [0, 1, 2, 3])
    assert attention.select((2, 3, 4), head=3).suffix((2, 3, 4)) == "_H3"
    with pytest.raises(ConfigError, match=r"^--layer 2 is out of range: the model has 2 layers \(0\.\.1\)$"):
        attention.select((2, 3, 4), layer=2)


# ------------------------------------------------------------------------------------------------ the report
def test_report_section_is_off_by_default_and_on_when_asked(tiny_adder, tmp_path, capsys):
    assert report_script.parse([str(tiny_adder)]) == ([tiny_adder], None, None)
    assert report_script.parse([str(tiny_adder), "--attention", "3+4", "out=x"])[1:] == (Path("x"), "3+4")
    plain = write_report([tiny_adder], tmp_path / "plain").read_text()
    assert "Attention" not in plain and not (tmp_path / "plain" / "attention.png").exists()
    out = tmp_path / "with"
    rc, stdout, err = run_main(capsys, report_script.main, tiny_adder, "--attention=3+4", f"out={out}")
    assert rc == 0, err
    page = (out / "report.html").read_text()
    assert "<h3>Attention on <code>3+4</code></h3>" in page and "a0 &#x27;3&#x27;" in page
    assert (out / "attention.png").read_bytes()[:8] == PNG
    unreadable = write_report([tiny_adder], tmp_path / "bad", attention="3*4").read_text()
    assert "No attention picture: cannot read" in unreadable
    rc, _, err = run_main(capsys, report_script.main, tiny_adder, "--attention")
    assert rc == 2 and "--attention needs a problem" in err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
