"""Shared glue for the Hydra entry scripts: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import sys

from arith.errors import ArithError


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArithError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt as e:
            print(f"interrupted: {e or 'stopped'}", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper
