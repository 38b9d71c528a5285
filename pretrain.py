"""Train a model (Hydra app; config in arith/config/pretrain.yaml, typed in arith/schema.py).

    python pretrain.py +experiment=quickstart
    python pretrain.py name=RUN data=addition model.abs_pos=abacus model.recurrences=16 train.budget_minutes=60
    torchrun --standalone --nproc_per_node=4 pretrain.py +experiment=paper_addition

Re-running the same command resumes the run from its latest checkpoint (raise train.steps or
train.budget_minutes to extend it).
"""

import hydra

from arith import schema
from arith.cli import user_errors

schema.register()


@hydra.main(config_path="arith/config", config_name="pretrain", version_base="1.3")
@user_errors
def main(cfg: schema.PretrainConfig) -> None:
    from arith import dist
    from arith.eval.quick import report_by_length
    from arith.train import train

    try:
        run_dir = train(cfg)
        if cfg.check_lens > 0 and dist.is_main():
            report_by_length(run_dir, max_len=cfg.check_lens, n=cfg.check_n)
    except BaseException:  # errors and signals too: no rank may exit with the process group still up
        dist.cleanup(synchronize=False)
        raise
    dist.cleanup()


if __name__ == "__main__":
    main()
