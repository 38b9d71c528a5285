"""Shared glue for the entry scripts: user errors and errors from the environment become one line on stderr
and exit code 2; arith's warnings print as one line."""

from __future__ import annotations

import functools
import sys
import warnings

from arith.errors import ArithError, ArithWarning, storage_error

_show = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ArithWarning):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        _show(message, category, filename, lineno, file, line)


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _one_line_warning
        try:
            return fn(*args, **kwargs)
        except ArithError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except OSError as e:  # a write or read site that did not name the problem itself
            print(f"error: {storage_error(e, 'access')}", file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt as e:
            print(f"interrupted: {e or 'stopped'}", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper
