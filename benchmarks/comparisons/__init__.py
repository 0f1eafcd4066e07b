"""The comparisons of `benchmarks/suite.py`, one module each; every one returns `Row`s of
side-by-side ratios measured in the same process (common.Row)."""
