"""`python -m vnnlab.train`, the module alias of the vnnlab-train console script (DESIGN.md's
contract; also `python -m vnnlab`). Nothing imports this module: the console script is
vnnlab.commands.train, the training function vnnlab.run.training.train."""

from vnnlab.commands.train import main

if __name__ == "__main__":
    main()
