"""Progress: a rich bar on a terminal, one plain line per epoch otherwise (logs, CI, pipes)."""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn


class Progress:
    def __init__(self, total_steps: int, title: str, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.fancy = enabled and self.console.is_terminal
        self.start = time.perf_counter()
        self.title = title
        if self.fancy:
            self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console)
            self.task = self.bar.add_task(title, total=total_steps, info="")
            self.bar.start()

    def step(self, done: int, info: str = "") -> None:
        if self.fancy:
            self.bar.update(self.task, completed=done, info=info)

    def epoch(self, line: str) -> None:
        if self.fancy:
            self.bar.console.print(line)
        elif self.enabled:
            print(f"{self.title} {line} ({time.perf_counter() - self.start:.1f}s)", file=sys.stderr, flush=True)

    def plan(self, total_steps: int, line: str) -> None:
        """The run's length is decided (fitted to a time budget): say what was chosen and resize the bar."""
        if self.fancy:
            self.bar.update(self.task, total=total_steps)
        self.epoch(line)

    def close(self) -> None:
        if self.fancy:
            self.bar.stop()
