"""Metrics: JSON lines in the run directory, and wandb (offline works with no login) or TensorBoard when asked."""

from __future__ import annotations

import json
import os
from pathlib import Path

from arith.errors import storage_error
from arith.files import atomic_write_text

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"  # event files, inside the run directory


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Every logged row of a run's metrics.jsonl, in order; a line cut short by a kill is skipped, and a run
    with no log yet gives []."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by a kill
            continue
    return rows


def scalars(row: dict, prefix: str = ""):
    """(tag, value) for every number of a metrics row but the step; a nested dict (selection accuracy per
    length) gives ``select/10``, ``select/12``, ..."""
    for key, value in row.items():
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and f"{prefix}{key}" != "step":
            yield f"{prefix}{key}", value


class MetricsLog:
    def __init__(
        self,
        run_dir: Path,
        resume_step: int,
        use_wandb: bool,
        project: str,
        config: dict,
        use_tensorboard: bool = False,
    ):
        self.path = Path(run_dir) / METRICS
        self._truncate_after(resume_step)
        try:
            self.file = open(self.path, "a")
        except OSError as e:
            raise storage_error(e, "append to", self.path) from None
        self.tensorboard = None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError(
                    "train.tensorboard=true needs tensorboard: pip install 'arith[tensorboard]'"
                ) from None
            # purge_step: TensorBoard hides the events an earlier session logged after the checkpoint we
            # resume from, as _truncate_after drops them from metrics.jsonl
            self.tensorboard = SummaryWriter(str(Path(run_dir) / TENSORBOARD), purge_step=resume_step + 1)
        self.wandb = None
        if use_wandb:
            try:
                import wandb
            except ImportError:
                raise ImportError("train.wandb=true needs wandb: pip install 'arith[wandb]'") from None
            os.environ.setdefault(
                "WANDB_MODE", "offline" if not os.environ.get("WANDB_API_KEY") else "online"
            )
            self.wandb = wandb.init(
                project=project, name=Path(run_dir).name, dir=str(run_dir), config=config, resume="allow"
            )

    def _truncate_after(self, step: int) -> None:
        """A resumed run rewrites history from its checkpoint: drop lines logged after it."""
        if not self.path.exists():
            return
        keep = [row for row in read_metrics(self.path.parent) if row.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in keep))

    def log(self, row: dict) -> None:
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as e:  # rows written before stay; a cut last line is skipped by read_metrics
            raise storage_error(e, "append to", self.path) from None
        if self.wandb is not None:
            self.wandb.log(row, step=row.get("step"))
        if self.tensorboard is not None:
            for tag, value in scalars(row):
                self.tensorboard.add_scalar(tag, value, global_step=row.get("step"))
            self.tensorboard.flush()

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
