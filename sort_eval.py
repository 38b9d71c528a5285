"""Evaluate a sorting run on a grid of max digits (a) x array length (b): exact match and first-label accuracy.

    python sort_eval.py run=<run_dir> eval.a_lens=[1,30] eval.b_lens=[1,30]

Prompts of different lengths within a cell are grouped by length and decoded in batches.
"""

from arith.cli import eval_app


@eval_app(sorting=True)
def main(cfg) -> None:
    """Hydra runs `arith.cli.eval_app`'s body with the config composed from arith/config/eval.yaml."""


if __name__ == "__main__":
    main()
