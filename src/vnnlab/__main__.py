"""`python -m vnnlab`: vnnlab-train."""

from vnnlab.commands.train import main

main()
