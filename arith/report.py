"""A run report: one static HTML page with PNGs beside it, for one run or a comparison of several.

    from arith.report import write_report
    write_report(["runs/quickstart"], "runs/quickstart/report")   # -> runs/quickstart/report/report.html

Per run: its config (the keys that differ from the defaults first), parameters, steps, time, the checkpoints
(which one ``latest`` and ``best`` name), training curves from metrics.jsonl, and per evaluated task and
settings a heatmap with its accuracy-by-length table. With several runs, first a comparison: the config keys
that differ between them, their curves overlaid in one figure, accuracy against length. Optionally
(``write_report(..., attention="123+456")``, ``scripts/report.py --attention``), each run's attention while it
answers that problem (``arith.plots.attention``). Every figure comes from ``arith.plots``; nothing here draws.
"""

from __future__ import annotations

import datetime
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from arith import checkpoint
from arith.card import flat_keys
from arith.errors import CheckpointError, ConfigError
from arith.eval.grid import read_results, summary_by_length
from arith.metrics import read_metrics
from arith.plots import grid_figures, plot_compare, plot_curves, save_figure, settings_text
from arith.runs import load_config
from arith.schema import PretrainConfig

REPORT = "report.html"
_CSS = """body{font-family:sans-serif;margin:24px;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:6px 0 14px}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}
th{background:#f0f0f0;text-align:left}td.num{text-align:right}code{font-size:12px}
img{max-width:100%;border:1px solid #ddd}.note{color:#a33}tr.trained td{color:#666}
h2{border-top:2px solid #888;padding-top:10px;margin-top:36px}"""


@dataclass
class RunFacts:
    run_dir: Path
    name: str
    config: dict[str, object]  # dotted key -> value, the saved config merged onto the schema
    defaults: dict[str, object]
    trained_len: int | None
    params: int | None = None
    state: dict = field(default_factory=dict)  # step, elapsed, tokens of the latest checkpoint
    checkpoints: list[tuple[str, list[str]]] = field(default_factory=list)  # (folder, pointers naming it)
    pointers: dict[str, str] = field(default_factory=dict)  # pointer file -> the folder it names
    history: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)


def _plain(cfg) -> dict[str, object]:
    return flat_keys(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def gather(run_dir: str | os.PathLike) -> RunFacts:
    """Everything the report shows about one run, read from its directory; raises ``ConfigError`` when it is
    not a run directory."""
    run_dir = Path(run_dir)
    try:
        config = _plain(load_config(run_dir))
    except ConfigError:
        raise
    except Exception as e:  # a config.yaml this arith cannot read: one line, not a traceback
        raise ConfigError(f"{run_dir / 'config.yaml'}: {type(e).__name__}: {e}".splitlines()[0]) from None
    lens = [config.get("data.max_len"), config.get("data.max_len_b")]
    facts = RunFacts(
        run_dir=run_dir,
        name=str(config.get("name") or run_dir.resolve().name),
        config=config,
        defaults=_plain(OmegaConf.structured(PretrainConfig)),
        trained_len=max((v for v in lens if isinstance(v, int)), default=None),
        history=read_metrics(run_dir),
        results=read_results(run_dir),
    )
    root = run_dir / checkpoint.CKPT_DIR
    if root.is_dir():  # every plain file there is a pointer: latest, best, whatever a later arith adds
        facts.pointers = {p.name: p.read_text().strip() for p in sorted(root.iterdir()) if _is_pointer(p)}
    dirs = [d.name for d in checkpoint.step_dirs(run_dir)]
    facts.checkpoints = [(d, [p for p, target in facts.pointers.items() if target == d]) for d in dirs]
    latest = facts.pointers.get(checkpoint.LATEST) or (dirs[-1] if dirs else None)
    if latest in dirs:
        ckpt = root / latest
        facts.params = _count_params(ckpt / checkpoint.WEIGHTS)
        try:
            state = checkpoint.load_trainer_state(ckpt)
            facts.state = {k: state[k] for k in ("step", "elapsed", "tokens") if k in state}
        except CheckpointError:
            pass  # a corrupt trainer state: the last training row below says as much
    if not facts.state and facts.history:  # no readable checkpoint
        last = [r for r in facts.history if "loss" in r][-1:] or facts.history[-1:]
        facts.state = {
            "step": last[0].get("step"),
            "elapsed": last[0].get("elapsed_s"),
            "tokens": last[0].get("tokens"),
        }
    return facts


def _is_pointer(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")


def _count_params(weights: Path) -> int | None:
    """Entries in a safetensors file, read from its header (a tied matrix is stored, and counted, once)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            total = 0
            for key in f.keys():
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
            return total
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------------------------
# HTML


def _e(value) -> str:
    return html.escape(str(value))


def _yaml(value) -> str:
    """A config value as config.yaml spells it: true, null, [0.9, 0.98]."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _table(
    header: Sequence[str] | None, rows: Sequence[Sequence], classes: Sequence[str] | None = None
) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_e(v)}</td>'
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td>{_e(v)}</td>"
            for v in row
        )
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _img(path: Path, out: Path, alt: str) -> str:
    return f'<p><img src="{_e(path.relative_to(out).as_posix())}" alt="{_e(alt)}"></p>'


def _minutes(seconds) -> str:
    return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "-"


def _facts_table(f: RunFacts) -> str:
    step, elapsed, tokens = (f.state.get(k) for k in ("step", "elapsed", "tokens"))
    rows = [
        ("run directory", str(f.run_dir)),
        ("parameters", f"{f.params:,}" if f.params is not None else "- (no readable checkpoint)"),
        ("steps", f"{step:,}" if isinstance(step, int) else "- (not trained yet)"),
        ("training time", _minutes(elapsed)),
        ("tokens", f"{tokens:,}" if isinstance(tokens, int) else "-"),
    ]
    if isinstance(tokens, int) and isinstance(elapsed, (int, float)) and elapsed > 0:
        rows.append(("tokens / s (mean)", f"{tokens / elapsed:,.0f}"))
    return _table(None, rows)


def _checkpoints(f: RunFacts) -> str:
    if not f.checkpoints:
        return '<p class="note">No checkpoint yet.</p>'
    text = _table(("checkpoint", "named by"), [(d, ", ".join(p) or "") for d, p in f.checkpoints])
    missing = {p: t for p, t in f.pointers.items() if t not in {d for d, _ in f.checkpoints}}
    for pointer, target in missing.items():
        text += f'<p class="note">checkpoints/{_e(pointer)} names {_e(target)}, which does not exist.</p>'
    return text


def _config(f: RunFacts) -> str:
    changed = [
        (k, _yaml(v), _yaml(f.defaults[k]) if k in f.defaults else "(no default)")
        for k, v in f.config.items()
        if k not in f.defaults or v != f.defaults[k]
    ]
    same = [(k, _yaml(v)) for k, v in f.config.items() if k in f.defaults and v == f.defaults[k]]
    return (
        f"<h3>Config: {len(changed)} keys differ from the defaults</h3>"
        + _table(("key", "value", "default"), changed)
        + f"<details><summary>the other {len(same)} keys (defaults)</summary>{_table(('key', 'value'), same)}</details>"
    )


def _evaluation(f: RunFacts, out: Path, prefix: str) -> str:
    if not f.results:
        return (
            '<h3>Evaluation</h3><p class="note">No evaluation yet: no CSV rows under '
            f"<code>{_e(f.run_dir / 'eval')}</code>, so no heatmap and no accuracy table. Evaluate with "
            f"<code>python arithmetic_eval.py run={_e(f.run_dir)}</code> (<code>sort_eval.py</code> for sorting).</p>"
        )
    files = sorted(p.name for p in (f.run_dir / "eval").glob("*.csv"))
    plural = "s" if len(files) != 1 else ""
    parts = [
        f"<h3>Evaluation</h3><p>From {len(files)} CSV file{plural}: <code>{_e(', '.join(files))}</code></p>"
    ]
    for fig in grid_figures(f.run_dir):
        (png,) = save_figure(fig.figure, out / f"{prefix}{fig.stem}", ("png",))
        settings = settings_text(fig.settings)
        recorded = (
            f"made with {settings}"
            if settings
            else "the CSVs record no checkpoint or settings; the run's latest checkpoint is "
            + str(f.pointers.get(checkpoint.LATEST, "-"))
        )
        parts.append(f"<h4>{_e(fig.task)}: {_e(recorded)}</h4>" + _img(png, out, f"{fig.task} heatmap"))
        trained = f.trained_len if fig.task == f.config.get("data.task") else None
        table = summary_by_length(fig.rows, fig.task)
        rows = [
            (
                L,
                f"{100 * d:.1f}" if d is not None else "-",
                f"{100 * m:.1f}",
                n,
                "yes" if trained and L <= trained else "",
            )
            for L, d, m, n in table
        ]
        classes = ["trained" if trained and L <= trained else "" for L, *_ in table]
        header = ("length L", "L x L (%)", "mean, max operand = L (%)", "cells", "trained")
        parts.append(_table(header, rows, classes))
    return "".join(parts)


def _attention(f: RunFacts, out: Path, prefix: str, problem: str) -> str:
    """The optional attention section (``write_report(..., attention=PROBLEM)``): the run's attention while it
    answers `problem` (`arith.plots.attention`) and the summary in words; a note when it cannot be drawn."""
    from arith.errors import ArithError
    from arith.plots import attention
    from arith.runs import load

    head = f"<h3>Attention on <code>{_e(problem)}</code></h3>"
    try:
        maps = attention.capture(load(f.run_dir), problem)
    except ArithError as e:
        return f'{head}<p class="note">No attention picture: {_e(e)}</p>'
    png = attention.plot_attention(maps, out / f"{prefix}attention.png")
    text = "\n".join(attention.summary_lines(maps))
    return head + _img(png, out, f"attention on {problem}") + f"<pre>{_e(text)}</pre>"


def _run_section(f: RunFacts, out: Path, prefix: str, curves: bool, attention: str | None = None) -> str:
    parts = [f"<h2>{_e(f.name)}</h2>", _facts_table(f), _config(f), "<h3>Checkpoints</h3>", _checkpoints(f)]
    if curves:
        parts.append("<h3>Training curves</h3>")
        written = plot_curves({f.name: f.history}, out / f"{prefix}curves", ("png",))
        parts.append(
            _img(written[0], out, "training curves")
            if written
            else '<p class="note">No metrics logged yet.</p>'
        )
    parts.append(_evaluation(f, out, prefix))
    if attention is not None:
        parts.append(_attention(f, out, prefix, attention))
    return "".join(parts)


def _comparison(runs: list[RunFacts], out: Path) -> str:
    keys = dict.fromkeys(k for f in runs for k in f.config)
    differ = [k for k in keys if len({repr(f.config.get(k)) for f in runs}) > 1]
    parts = ["<h2>Comparison</h2>", f"<h3>{len(differ)} config keys differ between the runs</h3>"]
    parts.append(
        _table(
            ("key", *(f.name for f in runs)),
            [(k, *(_yaml(f.config[k]) if k in f.config else "-" for f in runs)) for k in differ],
        )
    )
    parts.append("<h3>Training curves, overlaid</h3>")
    written = plot_curves({f"{i}: {f.name}": f.history for i, f in enumerate(runs)}, out / "curves", ("png",))
    parts.append(
        _img(written[0], out, "training curves") if written else '<p class="note">No metrics logged yet.</p>'
    )
    evaluated = [f.run_dir for f in runs if f.results]
    if evaluated:
        parts.append("<h3>Accuracy against operand length</h3>")
        parts.append(
            _img(plot_compare(evaluated, out / "compare", ("png",))[0], out, "accuracy against length")
        )
    if len(evaluated) < len(runs):
        parts.append(f'<p class="note">{len(runs) - len(evaluated)} of the runs have no evaluation yet.</p>')
    return "".join(parts)


def write_report(
    run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, attention: str | None = None
) -> Path:
    """``out``/report.html and its PNGs for the runs given; returns the HTML's path. Every run is read before
    anything is written, so a bad run directory leaves ``out`` untouched. attention: a problem ("123+456"); each
    run's section then ends with its attention while answering it (off by default)."""
    runs = [gather(r) for r in run_dirs]
    if not runs:
        raise ConfigError("give at least one run directory")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    several = len(runs) > 1
    sections = [_comparison(runs, out)] if several else []
    sections += [
        _run_section(f, out, f"run{i}_" if several else "", not several, attention)
        for i, f in enumerate(runs)
    ]
    title = "arith report: " + ", ".join(f.name for f in runs)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1><p>Written {stamp} by "
        f"<code>python scripts/report.py</code>.</p>{''.join(sections)}</body></html>\n"
    )
    path = out / REPORT
    checkpoint.atomic_write_text(path, page)
    return path


def default_out(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """``RUN/report`` for one run; ``<parent of the first>/report_<a>_vs_<b>...`` for several."""
    runs = [Path(r) for r in run_dirs]
    if len(runs) == 1:
        return runs[0] / "report"
    name = "report_" + "_vs_".join(r.resolve().name for r in runs)
    if len(name) > 120:
        name = f"report_{runs[0].resolve().name}_and_{len(runs) - 1}_more"
    return runs[0].resolve().parent / name
