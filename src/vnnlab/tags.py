"""Every name vnnlab writes into MLflow and reads back: run tags, and how a sweep's job ended.

One place, so that the run that writes a tag, the sweep that reads it and `vnnlab-compare`
cannot drift apart. MLflow's own tags (`mlflow.*`) are those its UI reads.
"""

# --- a run ------------------------------------------------------------------------------------
MODEL = "vnnlab.model"  # the config group chosen: model=<name>
INFERENCE = "vnnlab.inference"  # inference=<name>, for a model that takes one
OPTIMIZER = "vnnlab.optimizer"  # optimizer=<name>
DATA = "vnnlab.data"  # data=<name>
GROUP_PREFIX = "vnnlab."  # vnnlab.<group>: the choice of any config group
OVERRIDES = "hydra.overrides"  # the command line's overrides, beside model= and data=
FAILURE = "vnnlab.failure"  # why a FAILED run failed
STOPPED_BY = "vnnlab.stopped_by"  # why a KILLED run stopped (Ctrl-C, SIGTERM)
RESUMED_WITH = "vnnlab.resumed_with"  # what a resumed run was continued with
NOTE = "mlflow.note.content"  # the run's description, at the top of its page in the UI
GIT_COMMIT = "mlflow.source.git.commit"
GIT_DIRTY = "vnnlab.git.dirty"  # uncommitted changes: the commit alone does not reproduce it
# Who writes a run: a RUNNING run whose process is alive on this host is not taken over; also
# the sweeper process that asked an Optuna trial (a user attribute), whose live trials no other
# sweeper of the study fails.
HOST = "vnnlab.host"
PID = "vnnlab.pid"
CHECKPOINT_DIR = "vnnlab.checkpoint_dir"  # where its last.ckpt is rewritten

# --- a sweep: one parent run, one child run per job --------------------------------------------
PARENT_RUN = "mlflow.parentRunId"  # on a child: its parent's run id (the UI nests it)
SWEEP_ROLE = "vnnlab.sweep.role"
PARENT, CHILD = "parent", "child"  # the values of SWEEP_ROLE
SWEEP_JOB = "vnnlab.sweep.job"  # on a child: Hydra's job number
SWEEP_PARAMS = "vnnlab.sweep.params"  # on the parent: the swept keys, comma-separated
SWEEP_OVERRIDES = "vnnlab.sweep.overrides"
SWEEP_LAUNCHER = "vnnlab.sweep.launcher"
SWEEP_SWEEPER = "vnnlab.sweep.sweeper"
SWEEP_DIR = "vnnlab.sweep.dir"
# On the parent, once the sweep ended (vnnlab.sweep.headline): what "best" means, and which
# child is best; the parent also carries that child's headline metrics as its own.
SWEEP_OBJECTIVE = "vnnlab.sweep.objective"  # e.g. "val/loss (minimize)"
SWEEP_BEST_RUN = "vnnlab.sweep.best_run"  # the best child's run id
SWEEP_BEST = "vnnlab.sweep.best"  # the best child's name: its swept values

# --- an experiment ------------------------------------------------------------------------------
# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts) unless told otherwise.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# --- how a job of a sweep ended (JobOutcome.status; what a sweeper reads) -------------------------
FINISHED = "FINISHED"  # its run ended FINISHED
FAILED = "FAILED"  # its run ended FAILED
BAD_INPUT = "BAD_INPUT"  # refused before any run existed
PRUNED = "PRUNED"  # stopped early by the sweeper; its run ended FINISHED
