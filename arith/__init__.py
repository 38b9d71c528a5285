"""arith: small transformers that do exact arithmetic and generalize to longer numbers.

`arith.load(run_dir)` returns a trained run; `.solve("12345+678")` answers a problem. The import is lazy so
that light tools (plots, grids) do not pay for torch.
"""

__all__ = ["load"]


def __getattr__(name):
    if name == "load":
        from arith.runs import load

        return load
    raise AttributeError(f"module 'arith' has no attribute {name!r}")
