"""vnnlab: experiment management for variational neural networks."""

__version__ = "0.1.0"
