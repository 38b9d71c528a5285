"""Evaluate a sorting run on a grid of max digits (a) x array length (b): exact match and first-label accuracy.

    python sort_eval.py run=<run_dir> eval.a_lens=[1,30] eval.b_lens=[1,30]

Prompts of different lengths within a cell are grouped by length and decoded in batches.
"""

import hydra

from arith import schema
from arith.cli import user_errors

schema.register()


@hydra.main(config_path="arith/config", config_name="eval", version_base="1.3")
@user_errors
def main(cfg: schema.EvalAppConfig) -> None:
    from arith.eval.runner import run_grid

    run_grid(cfg, sorting=True)


if __name__ == "__main__":
    main()
