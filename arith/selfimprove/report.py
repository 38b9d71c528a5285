"""For people only: held-out exact match by length after each round, and its plot. True answers are read here
and nowhere on the training path."""

from __future__ import annotations

from pathlib import Path

from arith.eval.quick import evaluate_cell
from arith.metrics import read_metrics

PLOT = "self_improve.png"


def heldout(model, tok, task, lens, n: int, seed: int, vote_ks) -> dict[int, float]:
    """Exact match on n held-out (L, L) problems per length, decoded with the model's vote (vote_ks)."""
    return {
        int(length): evaluate_cell(model, tok, task, length, length, n, seed, vote_ks=vote_ks)["correct"] / n
        for length in lens
    }


def plot_rounds(out: Path) -> Path:
    """<out>/self_improve.png: held-out accuracy against length, one line per round (from metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(out) if r.get("heldout")]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    cmap = plt.get_cmap("viridis")
    for i, row in enumerate(rows):
        lens = sorted(int(k) for k in row["heldout"])
        ax.plot(
            lens,
            [100 * row["heldout"][str(k)] for k in lens],
            marker="o",
            ms=3,
            color=cmap(i / max(1, len(rows) - 1)),
            label=f"round {row['round']} (frontier {row['next_frontier']})",
        )
    ax.set_xlabel("operand length (digits, both operands)")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(f"self-improvement: {Path(out).name}")
    if rows:
        ax.legend(fontsize=7, ncol=2 if len(rows) > 8 else 1)
    fig.tight_layout()
    path = Path(out) / PLOT
    fig.savefig(path)
    plt.close(fig)
    return path
