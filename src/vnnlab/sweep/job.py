"""One job of a multirun: its run is a child of the sweep's parent run, and however it ends it
returns (and records) a JobOutcome rather than raising. Hydra's basic launcher would stop the
sweep at a SystemExit and report only the first exception; the sweep callback lists every job
that did not finish once the sweep ends."""

import os
import sys
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vnnlab import tags
from vnnlab.errors import BadInputError
from vnnlab.overrides import with_keys
from vnnlab.run.context import RunContext, SweepJob
from vnnlab.run.training import train
from vnnlab.sweep.pruning import TrialPruning
from vnnlab.sweep.records import JobOutcome, Sweep, sweep_dir


def run_job(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Train `cfg` as a job of the sweep the callback opened (its folder holds the sweep
    file); its outcome, as a dict (what a sweeper reads)."""
    hydra_cfg = HydraConfig.get()
    sweep = Sweep.read(sweep_dir(hydra_cfg))
    name = job_name(list(context.overrides), sweep)
    if sweep is not None:
        job = SweepJob(sweep.parent_run_id, sweep.tracking_uri, sweep.experiment_id, name,
                       hydra_cfg.job.num)  # fmt: skip
        context = RunContext(context.launch_dir, context.output_dir, context.overrides,
                             context.choices, job)  # fmt: skip
    threads = threads_per_job(hydra_cfg.launcher.get("n_jobs"))
    if threads is not None:
        torch.set_num_threads(threads)
    outcome = _outcome(cfg, context, name)
    if outcome.status != tags.FINISHED:
        print(f"vnnlab: job [{name}] {outcome.status}: {outcome.reason}", file=sys.stderr)
    if context.output_dir is not None:
        outcome.write(context.output_dir)
    return outcome.as_dict()


def _outcome(cfg: DictConfig, context: RunContext, name: str) -> JobOutcome:
    pruning = TrialPruning(**cfg.trial) if cfg.get("trial") is not None else None
    try:
        run = train(cfg, context, callbacks=[pruning] if pruning else [])
    except BadInputError as error:
        return JobOutcome(name, tags.BAD_INPUT, str(error))
    except Exception as error:  # the run itself ended FAILED with this reason
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        return JobOutcome(name, tags.FAILED, reason)
    if pruning is not None and pruning.pruned:
        reason = f"pruned by the sweeper after epoch {pruning.pruned_epoch}"
        return JobOutcome(name, tags.PRUNED, reason, run.run_id, run.metrics)
    return JobOutcome(name, tags.FINISHED, "", run.run_id, run.metrics)


def job_name(overrides: list[str], sweep: Sweep | None) -> str:
    """A job is named by the values it takes on the swept keys (all its overrides otherwise)."""
    swept = with_keys(overrides, sweep.swept) if sweep is not None else []
    return " ".join(swept or overrides)


def threads_per_job(n_jobs: Any) -> int | None:
    """cores / parallel jobs for a job of a parallel launcher, so that parallel jobs do not
    oversubscribe the cores (DESIGN.md, measured traps); None: leave torch's default."""
    if not isinstance(n_jobs, int) or n_jobs == 1:
        return None
    cores = os.cpu_count() or 1
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))
