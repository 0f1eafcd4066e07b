"""One file per model family; formulas in losses.py, shared layers in layers.py."""
