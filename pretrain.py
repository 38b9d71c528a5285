"""Train a model (Hydra app; config in arith/config/pretrain.yaml, typed in arith/schema.py).

    python pretrain.py +experiment=quickstart
    python pretrain.py name=RUN data=addition model.abs_pos=abacus model.recurrences=16 train.budget_minutes=60
    torchrun --standalone --nproc_per_node=4 pretrain.py +experiment=paper_addition

Re-running the same command resumes the run from its latest checkpoint (raise train.steps or
train.budget_minutes to extend it).
"""

import os

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
        main_rank = dist.is_main()
    except BaseException:  # errors and signals too: no rank may exit with the process group still up
        dist.cleanup(synchronize=False)
        raise
    # the group goes first: the other ranks would otherwise wait in cleanup's barrier for rank 0's report, past
    # NCCL's watchdog timeout on a long one
    dist.cleanup()
    if cfg.check_lens > 0 and main_rank:  # on the device the run trained on
        device = dist.pick_device(str(cfg.train.device), int(os.environ.get("LOCAL_RANK", "0")))
        report_by_length(run_dir, max_len=cfg.check_lens, n=cfg.check_n, device=device)


if __name__ == "__main__":
    main()
