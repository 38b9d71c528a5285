"""Export one checkpoint of a run as a self-contained folder to share (or push to the Hugging Face Hub).

    python scripts/export.py run=runs/quickstart out=exports/quickstart
    python scripts/export.py run=runs/quickstart out=exports/qs_step2000 checkpoint=2000

checkpoint=best|latest|STEP (default: best when the run has one, else latest). The folder holds
model.safetensors (the moving average when the run kept one, as `arith.load` uses), config.json,
tokenizer.json, the evaluation CSVs made with that checkpoint and their heatmap, and a README.md model card.
Load it with `arith.load(out)`; `arith.load(out).push_to_hub("user/repo")` shares it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arith.cli import user_errors  # noqa: E402
from arith.errors import ArithError, ConfigError  # noqa: E402

KEYS = ("run", "out", "checkpoint")


def parse(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments, the same form as the Hydra entry scripts take."""
    args = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise ConfigError(f"{arg!r}: expected key=value with key one of {', '.join(KEYS)}")
        args[key] = value
    missing = [k for k in ("run", "out") if k not in args]
    if missing:
        raise ConfigError(
            f"missing {' and '.join(missing)}=...: python scripts/export.py run=RUN_DIR out=DIR"
        )
    return args


@user_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        from arith.runs import export

        args = parse(argv)
        out = export(args["run"], args["out"], args.get("checkpoint"))
    except ArithError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
