"""Evaluate a run on an operand-length grid (addition, subtraction, multiplication, bitwise OR).

    python arithmetic_eval.py run=runs/quickstart eval.a_lens=[1,24]
    python arithmetic_eval.py run=<run_dir> eval.a_lens=[1,100] eval.b_lens=[1,100] eval.n_per_cell=100 \
        eval.shard=3 eval.num_shards=20 eval.recurrences=16
    python arithmetic_eval.py run=<run_dir> eval.square=[101,160]

One CSV per shard under <run_dir>/eval/, one row per finished cell; re-running resumes. Plot with
`python scripts/plot_grid.py <run_dir>`.
"""

import hydra

from arith import schema
from arith.cli import user_errors

schema.register()


@hydra.main(config_path="arith/config", config_name="eval", version_base="1.3")
@user_errors
def main(cfg: schema.EvalAppConfig) -> None:
    from arith.eval.runner import run_grid

    run_grid(cfg, sorting=False)


if __name__ == "__main__":
    main()
