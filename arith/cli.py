"""Shared glue for the entry scripts: user errors and errors from the environment become one line on stderr
and exit code 2; arith's warnings print as one line."""

from __future__ import annotations

import functools
import sys
import warnings

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


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _one_line_warning
        try:
            return fn(*args, **kwargs)
        except ArithError as e:
            _line(f"error: {e}")
            sys.exit(2)
        except OSError as e:  # a write or read site that did not name the problem itself
            _line(f"error: {storage_error(e, 'access')}")
            sys.exit(2)
        except KeyboardInterrupt as e:
            _line(f"interrupted: {e or 'stopped'}")
            sys.exit(130)

    return wrapper
