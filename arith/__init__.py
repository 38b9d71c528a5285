"""arith: small transformers that do exact arithmetic and generalize to longer numbers.

`arith.load(run_dir)` returns a trained run (a `Run`; also from an export folder); `.solve("12345+678")`
answers a problem; `arith.Run.from_pretrained("user/repo")` loads an export from the Hugging Face Hub. The
import is lazy so that light tools (plots, grids) do not pay for torch.
"""

__all__ = ["Run", "load"]


def __getattr__(name):
    if name in __all__:
        from arith import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'arith' has no attribute {name!r}")
