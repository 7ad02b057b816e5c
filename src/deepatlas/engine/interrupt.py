"""Ctrl-C (or SIGTERM, as a scheduler sends before it preempts a job) stops a run at a safe point.

Python raises KeyboardInterrupt wherever the signal lands, and one landing in a finalizer (`__del__`) is
printed and ignored: a run could miss a Ctrl-C. Inside `StopRequests` the first signal only sets `requested`;
the loop sees it after the step it is in, checkpoints that exact position and stops. A second signal raises
KeyboardInterrupt at once (the last checkpoint is kept).
"""
from __future__ import annotations

import signal
import sys
import threading


class StopRequests:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step to save a checkpoint (press Ctrl-C again to stop at once)", file=sys.stderr)
