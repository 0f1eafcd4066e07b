#!/usr/bin/env bash
# The uci_methods study on one table of the UCI format (any number of split columns): each
# method's sweep over every split column, fitted on train and refitted on train + val, then the
# sweep's summary (vnnlab-compare: per split, the setting with the lowest val/nll, its refit
# reported). Runs go to the MLflow store of the current folder (./mlflow.db by default).
#   python -m vnnlab.data.uci ../shared/data/uci/bostonHousing boston.csv
#   bash experiments/uci_methods/run.sh boston.csv
#   python experiments/uci_methods/table.py boston      # the study's table, published beside
set -euo pipefail
table=$(realpath "$1")
U="+experiment=uci_methods data.path=$table data.split_column=all data.train_on_val=false,true"
S="--over data.split_column --select val/nll --refit data.train_on_val"
CLOSED_FORM="model.learn_sigma2=optimal"  # σ² = the training residual, per step

vnnlab-train -m $U trainer.max_epochs=40,100 inference=map,bbb,mc_dropout $CLOSED_FORM
vnnlab-compare $S --per inference
vnnlab-train -m $U trainer.max_epochs=40,100 inference=mc_dropout \
  inference.dropout=0.005,0.01,0.05,0.1 $CLOSED_FORM  # Gal's grid of dropout rates
vnnlab-compare $S
vnnlab-train -m $U trainer.max_epochs=40,100,200 inference=mc_dropout model.noise=heteroscedastic
vnnlab-compare $S
vnnlab-train -m $U trainer.max_epochs=40,100 inference=bbb inference.kl_weight=0.1 $CLOSED_FORM
vnnlab-compare $S
vnnlab-train -m $U trainer.max_epochs=40,100 inference=ensemble,laplace
vnnlab-compare $S --per inference
vnnlab-train -m $U trainer.max_epochs=40,100 inference=ivon model.lr=0.1 $CLOSED_FORM
vnnlab-compare $S
