"""Generate, tokenize and save a dataset (the same `data` config as training).

    python scripts/make_data.py data=addition data.max_len=20 data.n_train=20000000
    python scripts/make_data.py data=sorting data.max_len=10 data.max_len_b=10
    ARITH_DATA=/scratch/data python scripts/make_data.py data=multiplication data.max_len=15

Writes <data.root>/<data.name>/ (a Hugging Face DatasetDict with train/test splits, tokenizer.json and
arith_data.json). An existing dataset is left alone; pretrain.py builds a missing one itself.
"""

import sys
from pathlib import Path

import hydra

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arith import schema  # noqa: E402
from arith.cli import user_errors  # noqa: E402

schema.register()


@hydra.main(config_path="../arith/config", config_name="make_data", version_base="1.3")
@user_errors
def main(cfg: schema.DataGenConfig) -> None:
    from arith.data.datasets import dataset_dir, ensure

    existed = dataset_dir(cfg.data).exists()
    path = ensure(cfg.data)
    print(f"{'kept existing' if existed else 'wrote'} {path}")


if __name__ == "__main__":
    main()
