"""The one plotting package: accuracy grids of finished runs, titled from each run's own config, and training
curves from metrics.jsonl.

    from arith.plots import plot_run, plot_compare, plot_curves
    plot_run("runs/addition20_abacus-none_2x8_w1024_s0")           # heatmap_<task>.png/.pdf in the run dir
    plot_compare([run_a, run_b], Path("runs/compare"))             # compare.png/.pdf: accuracy vs length
    plot_curves({"a": read_metrics(run_a)}, Path("runs/curves"))   # curves.png/.pdf: loss, lr, ... vs step

Figures are built on matplotlib's ``Figure`` with the Agg canvas, never through pyplot, so nothing here
opens a window or touches global state. Results come from ``arith.eval.grid.read_results``.

One module a figure kind, the names re-exported here:

    common.py     save_figure (the Agg canvas), the run-config values titles and outlines come from
    grid.py       heatmap, grid_figures / GridFigure, settings_columns, settings_text, plot_run
    lengths.py    accuracy against operand length: plot_compare, plot_groups
    curves.py     training curves: CURVES, curves_figure, plot_curves
    positions.py  position tables: position_table_stats, plot_positions
"""

from arith.plots.common import save_figure
from arith.plots.curves import CURVES, curves_figure, plot_curves
from arith.plots.grid import (
    ANNOTATE_MAX,
    GridFigure,
    grid_figures,
    heatmap,
    plot_run,
    settings_columns,
    settings_text,
)
from arith.plots.lengths import plot_compare, plot_groups
from arith.plots.positions import plot_positions, position_table_stats

__all__ = [
    "ANNOTATE_MAX",
    "CURVES",
    "GridFigure",
    "curves_figure",
    "grid_figures",
    "heatmap",
    "plot_compare",
    "plot_curves",
    "plot_groups",
    "plot_positions",
    "plot_run",
    "position_table_stats",
    "save_figure",
    "settings_columns",
    "settings_text",
]
