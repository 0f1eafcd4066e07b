"""One training run: train(cfg, context) validates, builds, fits, tests and records it
(train.py, build.py); resume.py continues a stopped one; load.py and predict.py bring a
finished one back."""
