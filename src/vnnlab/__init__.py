"""vnnlab: experiment management for variational neural networks.

commands/ (the console scripts) → run/ (one run) and sweep/ (a multirun) → tracking/ (MLflow),
models/, data/ → errors, schema, tags.
"""

from pathlib import Path

__version__ = "0.2.0"

# Hydra's config root: a link to the top-level conf/ in a checkout, a copy in a wheel.
CONFIG_DIR = str(Path(__file__).parent / "conf")
