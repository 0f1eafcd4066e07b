"""The console scripts, thin: each parses its command line, builds what the run or the sweep
needs to know about it, and calls into vnnlab.run or vnnlab.sweep. Each `main(argv)` can be
called in-process (tests, scripts): it ends with SystemExit like the command."""
