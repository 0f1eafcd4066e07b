"""MLflow bookkeeping: the store (store.py), one run's lifecycle and records (run.py), signals
that end a run KILLED (interrupts.py) and Lightning's logger on a run (logger.py, the one module
here that imports Lightning)."""
