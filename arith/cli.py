"""Shared glue for the entry scripts: user errors and errors from the environment become one line on stderr
and exit code 2; arith's warnings print as one line.

In a sweep (``-m``, any launcher) each job also writes its output to ``<sweep dir>/<job>/<script>.log``
(``<script>.rank<r>.log`` for the other tasks of a multi-task SLURM job), and a user error fails only that job:
the launcher runs the others, then Hydra prints the first failure in one line.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.errors import CompactHydraException

from arith import schema
from arith.errors import ArithError, ArithWarning, storage_error

_show = warnings.showwarning


def _line(text: str) -> None:
    """A line of its own on stderr, even with a progress bar drawn there (tqdm lifts its bars around it)."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ArithWarning):
        _line(f"warning: {message}")
    else:
        _show(message, category, filename, lineno, file, line)


class JobFailed(CompactHydraException):
    """A sweep job's user error, reported by Hydra's launcher process as one line (naming the job's log)."""


class _Tee:
    """A text stream that writes to the original stream and to a log file."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ... of the original stream
        return getattr(self._stream, name)


def _sweep_log() -> Path | None:
    """This job's log file when it runs in a Hydra sweep, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)
    return Path(hc.runtime.output_dir) / f"{hc.job.name}{f'.rank{rank}' if rank else ''}.log"


@contextlib.contextmanager
def _tee_to(path: Path | None):
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    out, err = sys.stdout, sys.stderr
    with open(path, "a", buffering=1) as log:
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        log = _sweep_log()
        warnings.showwarning = _one_line_warning
        with _tee_to(log):
            try:
                return fn(*args, **kwargs)
            except (ArithError, OSError) as e:  # OSError: a read or write site that did not name it itself
                message = f"error: {e if isinstance(e, ArithError) else storage_error(e, 'access')}"
                _line(message)
                if log is not None:
                    detail = message.removeprefix("error: ")
                    raise JobFailed(f"error in sweep job {log.parent.name}: {detail} (log: {log})") from None
                sys.exit(2)
            except KeyboardInterrupt as e:
                _line(f"interrupted: {e or 'stopped'}")
                sys.exit(130)
            except Exception:
                if log is not None:  # the traceback belongs in the job's log too, not only in the launcher's
                    traceback.print_exc()
                raise

    return wrapper


def eval_app(sorting: bool):
    """The body of arithmetic_eval.py and sort_eval.py (`run_grid`), decorating the script's own empty `main` so
    that Hydra names the job after the script."""

    def wrap(script_main):
        schema.register()

        @hydra.main(config_path=str(Path(__file__).parent / "config"), config_name="eval", version_base="1.3")
        @user_errors
        @functools.wraps(script_main)
        def main(cfg: schema.EvalAppConfig) -> None:
            from arith.eval.runner import run_grid

            run_grid(cfg, sorting=sorting)

        return main

    return wrap


def append_section(out, text: str, title: str = "# Benchmarks") -> Path:
    """Append a benchmark's markdown section to the file `out` (created with `title` when missing, its folder too),
    one blank line before it: what every `scripts/bench_*.py --out FILE` writes."""
    out = Path(out)
    old = out.read_text() if out.exists() else title + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(old.rstrip("\n") + "\n\n" + text)
    return out
