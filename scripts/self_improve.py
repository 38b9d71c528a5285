"""Self-improvement: a trained run teaches itself longer numbers, with no labels from outside.

    python scripts/self_improve.py run=runs/quickstart
    python scripts/self_improve.py run=runs/quickstart rounds=8 threshold=0.8 labelers=[runs/quickstart_s1]

The child run (default <run>_si beside the run) is a run directory like any other (arith.load, arithmetic_eval.py
and scripts/report.py read it); its pseudo-labels are kept under <out>/pseudo/round_<r>/, one checkpoint per
round end, the per-round report in metrics.jsonl and self_improve.png. Killed, the same command resumes.
Keys: arith/schema.py SelfImproveConfig (arith/config/self_improve.yaml).
"""

import sys
from pathlib import Path

import hydra

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arith import schema  # noqa: E402
from arith.cli import user_errors  # noqa: E402

schema.register()


@hydra.main(config_path="../arith/config", config_name="self_improve", version_base="1.3")
@user_errors
def main(cfg: schema.SelfImproveConfig) -> None:
    from arith.selfimprove.loop import self_improve

    self_improve(cfg)


if __name__ == "__main__":
    main()
