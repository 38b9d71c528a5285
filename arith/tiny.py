"""The tiny training run: Hydra overrides of the `pretrain` config for a model and data small enough that a run
of a few steps takes seconds on one CPU core. The tests and the GPU check (scripts/gpu_check_runs.py) start
their quick runs from it; imports nothing, so a script can use it before it imports torch."""

from __future__ import annotations

TINY_RUN = (
    "model.width=32",
    "model.heads=2",
    "model.ffn=64",
    "model.layers=1",
    "model.recurrences=2",
    "model.max_pos=32",
    "model.max_k=5",
    "data.max_len=3",
    "data.streaming=true",
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.progress=false",
)


def _key(override: str) -> str:
    """The config key an override sets: "train.lr=3e-3" -> "train.lr"."""
    return override.split("=", 1)[0]


def tiny_overrides(*extra: str) -> list[str]:
    """`TINY_RUN` with `extra` overrides: an extra of a key `TINY_RUN` sets takes its place (so no key is set
    twice), the others come after, in their order."""
    given = {_key(o): o for o in extra}
    base = [given.pop(_key(o), o) for o in TINY_RUN]
    return base + [o for o in extra if _key(o) in given]
