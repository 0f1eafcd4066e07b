"""`python -m vnnlab.train`: vnnlab-train, under the name DESIGN.md's contract gives it (also
`python -m vnnlab`). Nothing imports this module; the command is vnnlab.commands.train."""

from vnnlab.commands.train import main

if __name__ == "__main__":
    main()
