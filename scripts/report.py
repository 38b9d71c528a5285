"""Write a run report: one static HTML page (report.html) with its PNGs beside it, no network or JavaScript.

    python scripts/report.py runs/quickstart                       # -> runs/quickstart/report/report.html
    python scripts/report.py runs/RUN_A runs/RUN_B [out=DIR]       # a comparison, curves overlaid
    python scripts/report.py runs/quickstart --attention "123+456"  # + attention pictures (off by default)

Per run: config (keys that differ from the defaults first), parameters, steps, time, checkpoints (which is
``latest``, which ``best``), training curves from metrics.jsonl, and per evaluated task and settings a heatmap
with its accuracy-by-length table (``arith/report.py``; figures from ``arith/plots/``). ``out=DIR`` defaults
to ``RUN/report`` for one run and ``<parent>/report_<A>_vs_<B>`` for several. ``--attention PROBLEM`` adds a
section to each run: its attention, every layer x recurrence x head, while it answers PROBLEM greedily with its
evaluation settings, and which operand digits each answer token's query attends to most
(``scripts/plot_attention.py`` draws one problem alone). Prints the path of report.html. A folder that is not a
run directory is a one-line error and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from arith.cli import user_errors
from arith.errors import ConfigError

USAGE = "usage: python scripts/report.py RUN [RUN ...] [out=DIR] [--attention PROBLEM]"


def parse(argv: list[str]) -> tuple[list[Path], Path | None, str | None]:
    runs, out, attention = [], None, None
    args = iter(argv)
    for arg in args:
        key, sep, value = arg.partition("=")
        if arg == "--attention" or key == "--attention":
            attention = value if sep else next(args, None)
            if not attention:
                raise ConfigError(f'--attention needs a problem, e.g. --attention "123+456" ({USAGE})')
        elif sep and key == "out":
            out = Path(value)
        elif (sep or arg.startswith("--")) and not Path(arg).exists():
            raise ConfigError(
                f"unknown argument {arg!r}: the options are out=DIR and --attention PROBLEM ({USAGE})"
            )
        else:
            runs.append(Path(arg))
    if not runs:
        raise ConfigError(f"give at least one run directory ({USAGE})")
    return runs, out, attention


@user_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    runs, out, attention = parse(argv)
    from arith.report import default_out, write_report  # after parsing, so --help stays instant

    print(write_report(runs, out if out is not None else default_out(runs), attention=attention))
    return 0


if __name__ == "__main__":
    sys.exit(main())
