"""Draw what a run's attention looks at while it answers one problem, and say it in words.

    python scripts/plot_attention.py runs/quickstart "123+456" [--layer L] [--recurrence R] [--head H]
                                     [--out FILE.png] [--checkpoint best|latest|STEP] [--k K] [--row-window W]
                                     [--per-recurrence] [--top N]

The run answers greedily with its evaluation settings (offset k, recurrences, row window; --k and --row-window
override them; a vote set is not used). The figure is a grid of heatmaps, one per layer x recurrence x head (only
those given with --layer / --recurrence / --head, 0-based), queries down and keys across, ticks naming each token
(a digit also by its number and index, 0 = least significant: ``3 a0``); white cells are future keys, grey ones
keys outside the row window. Default output: ``RUN/attention_<problem>.png``. Then, for each token the model
wrote, the prompt tokens its query attends to most (mean over heads, last recurrence; --per-recurrence: each).
Logic in ``arith/plots/attention.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arith.cli import user_errors  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory or export folder")
    parser.add_argument("problem", help='a problem as solve reads it, e.g. "123+456"')
    parser.add_argument("--layer", type=int, default=None, help="only this layer (0-based)")
    parser.add_argument("--recurrence", type=int, default=None, help="only this recurrence (0-based)")
    parser.add_argument("--head", type=int, default=None, help="only this head (0-based)")
    parser.add_argument("--out", type=Path, default=None, help="image to write (default RUN/attention_*.png)")
    parser.add_argument(
        "--checkpoint", default=None, help="best | latest | a step (default: best, else latest)"
    )
    parser.add_argument("--k", type=int, default=None, help="evaluation offset (default: the run's)")
    parser.add_argument(
        "--row-window", type=int, default=None, help="row window (default: the run's; 0 = off)"
    )
    parser.add_argument("--per-recurrence", action="store_true", help="summary at every recurrence")
    parser.add_argument("--top", type=int, default=3, help="prompt tokens named per query (default 3)")
    return parser.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import arith
    from arith.plots import attention

    run = arith.load(args.run, checkpoint=args.checkpoint)
    settings = attention.attention_settings(run, k=args.k, row_window=args.row_window)
    dims = attention.dims_of(run, settings)
    # a bad index or file type before any decoding
    sel = attention.select(dims, args.layer, args.recurrence, args.head)
    out = args.out or attention.default_path(args.run, args.problem, sel, dims)
    attention.picture_format(out)
    maps = attention.capture(run, args.problem, settings)
    path = attention.plot_attention(maps, out, sel)
    print("\n".join(attention.summary_lines(maps, top=max(1, args.top), per_recurrence=args.per_recurrence)))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
