"""A multirun as one MLflow parent run with one child run per job, with every Hydra launcher:
the Hydra callback that opens and closes the parent (hydra_callback.py), one job (job.py),
what they exchange through the sweep folder (records.py), the comparison table and figure
(compare.py) and an Optuna trial's pruning (pruning.py).

Hydra imports this package for every command (its callback is in conf/config.yaml): it and
hydra_callback.py import only Hydra at module level."""
