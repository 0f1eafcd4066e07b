"""One file per model family; formulas in objectives.py (densities, KLs, bounds), metrics.py
(what evaluation reports) and subspaces.py (PCA algebra), shared layers in layers.py."""
