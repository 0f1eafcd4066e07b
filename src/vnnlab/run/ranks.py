"""Multi-process training (`trainer.strategy=ddp trainer.devices=N`): which process records.

Lightning starts the processes of ranks 1, 2, … itself, by running the same command line
again in the same output folder (its subprocess launcher; under Hydra with `hydra.run.dir`
set to this run's folder). Rank 0 is the run: it opens the MLflow run, writes its metrics,
checkpoints and figures. The other ranks train and test beside it and record nothing.

What rank 0 has decided before it starts them (the run they belong to, the checkpoint they
all start from) reaches them in the environment they inherit: a resumed run's newest
checkpoint could otherwise change, or be downloaded twice into one folder, between rank 0's
look and theirs.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

RANK_ZERO_RUN = "VNNLAB_RANK_ZERO_RUN"  # the environment variable: JSON of SharedRun


@dataclass(frozen=True)
class SharedRun:
    """What rank 0 hands to the others: its run, and the checkpoint to start from (None: the
    beginning)."""

    run_id: str
    experiment_id: str
    start_checkpoint: Path | None


def is_rank_zero() -> bool:
    """Whether this process records the run: the only process, or rank 0 of several. Read
    from what Lightning's launcher or a cluster's scheduler sets (LOCAL_RANK, RANK,
    SLURM_PROCID) when Lightning was imported."""
    return rank_zero_only.rank == 0


def share(run: SharedRun) -> None:
    """Rank 0, before its Trainer starts the other ranks: `run` for them to inherit."""
    checkpoint = str(run.start_checkpoint) if run.start_checkpoint else None
    os.environ[RANK_ZERO_RUN] = json.dumps(
        {"run_id": run.run_id, "experiment_id": run.experiment_id, "checkpoint": checkpoint}
    )


def shared() -> SharedRun | None:
    """On rank 1, 2, …: what rank 0 shared (None: these ranks were started by another
    launcher, e.g. torchrun or srun, all at once)."""
    value = os.environ.get(RANK_ZERO_RUN)
    if not value:
        return None
    fields = json.loads(value)
    checkpoint = Path(fields["checkpoint"]) if fields["checkpoint"] else None
    return SharedRun(fields["run_id"], fields["experiment_id"], checkpoint)
