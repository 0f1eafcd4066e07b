"""Data modules: each holds its whole data set as tensors and serves batches as index slices."""
