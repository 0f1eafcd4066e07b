"""One training run: train(cfg, context) validates, builds, fits, tests and records it
(training.py, build.py; the Lightning callbacks every run uses in lightning_callbacks.py);
resume.py continues a stopped one; load.py and predict.py bring a finished one back."""
