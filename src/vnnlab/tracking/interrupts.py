"""Signals that stop a run: Ctrl-C (SIGINT) and SIGTERM (`kill`, SLURM, a sweep launcher) end
it KILLED, never RUNNING, and the command exits 128 + the signal's number."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by signal `signum`. A KeyboardInterrupt, so that it passes
    through everything that lets Ctrl-C through (Hydra's launchers, `except Exception`)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SigtermHandler:
    """SIGTERM → Interrupted(SIGTERM), so that the run ends KILLED rather than RUNNING.

    While a Trainer runs a stage, Lightning's own SIGTERM handler (which calls this one after
    its own) has noted the signal and stops at the next batch: raising here as well could cut a
    database write in half. `trainer_running` says when
    (vnnlab.run.lightning_callbacks.TrainerStops)."""

    def __init__(self) -> None:
        self.trainer_running = False

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.trainer_running:
            raise Interrupted(signum)


@contextmanager
def sigterm_interrupts(handler: SigtermHandler) -> Iterator[None]:
    """`handler` installed for the duration, then the previous one again. Signals reach the
    main thread only: in another thread (a notebook's worker) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_reason(stop: BaseException) -> str:
    """What a KILLED run's tag says: `SIGTERM`, `SIGINT`, or the exception's repr."""
    if isinstance(stop, Interrupted):
        return signal.Signals(stop.signum).name
    if type(stop) is KeyboardInterrupt:
        return signal.Signals.SIGINT.name
    return repr(stop)
