"""Evaluate a run on an operand-length grid (addition, subtraction, multiplication, bitwise OR).

    python arithmetic_eval.py run=runs/quickstart eval.a_lens=[1,24]
    python arithmetic_eval.py run=<run_dir> eval.a_lens=[1,100] eval.b_lens=[1,100] eval.n_per_cell=100 \
        eval.shard=3 eval.num_shards=20 eval.recurrences=16
    python arithmetic_eval.py run=<run_dir> eval.square=[101,160]

One CSV per shard under <run_dir>/eval/, one row per finished cell; re-running resumes. Plot with
`python scripts/plot_grid.py <run_dir>`.
"""

from arith.cli import eval_app


@eval_app(sorting=False)
def main(cfg) -> None:
    """Hydra runs `arith.cli.eval_app`'s body with the config composed from arith/config/eval.yaml."""


if __name__ == "__main__":
    main()
