"""Position-table diagnostics: each row's norm and the pairwise |cosine| of the rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from arith.plots.common import _OUTLINE, save_figure


def position_table_stats(table: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(norm of each row 0..rows-1, |cosine| between every pair of them) of a position table (max_pos, width)."""
    t = np.asarray(table[:rows], dtype=np.float64)
    norms = np.linalg.norm(t, axis=1)
    unit = t / np.maximum(norms[:, None], 1e-12)
    return norms, np.abs(unit @ unit.T)


def plot_positions(table: np.ndarray, rows: int, reach: int | None, title: str, out: Path) -> list[Path]:
    """Two panels: each row's norm (with the highest row training reaches marked), and the pairwise |cosine|
    of rows 1..rows-1 (row 0 is the non-digit row). Writes out.png/.pdf."""
    norms, cos = position_table_stats(table, rows)
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_n, ax_c = fig.subplots(1, 2)
    ax_n.plot(np.arange(rows), norms, marker=".", color="#1f77b4")
    if reach is not None:
        ax_n.axvline(reach + 0.5, color=_OUTLINE, linestyle="--", label=f"highest row trained ({reach})")
        ax_n.legend(loc="best")
    ax_n.set_xlabel("position row")
    ax_n.set_ylabel("L2 norm")
    ax_n.set_title("row norms")
    im = ax_c.imshow(cos[1:, 1:], origin="lower", extent=(0.5, rows - 0.5, 0.5, rows - 0.5), vmin=0, vmax=1)
    ax_c.set_xlabel("row")
    ax_c.set_ylabel("row")
    ax_c.set_title("|cosine| between rows")
    fig.colorbar(im, ax=ax_c)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)
