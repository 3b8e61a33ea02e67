"""The one rich progress display of the CLI: it implements the library's callback protocol
(speechcls.runtime.Progress), so download, synth, featurize and fit report through the same object."""

from __future__ import annotations

import time
from typing import Callable

from speechcls.runtime import Progress


class RichProgress(Progress):
    """A rich bar per task with a rate (`unit`/s, or bytes), running loss / accuracy when reported, and
    an optional line printed when a task ends. Use as a context manager."""

    def __init__(
        self,
        console,
        unit: str = "",
        transfer: bool = False,
        on_end: Callable[[dict], str] | None = None,
        disable: bool = False,
    ):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        counts = (
            [DownloadColumn(), TransferSpeedColumn()]
            if transfer
            else [MofNCompleteColumn(), TextColumn("{task.fields[stats]}")]
        )
        self.console, self.unit, self.on_end = console, unit, on_end
        self.bar = Bar(
            "[progress.description]{task.description}", BarColumn(), *counts, TimeRemainingColumn(),
            console=console, transient=True, disable=disable,
        )  # fmt: skip
        self.task, self.t0, self.seen, self.with_loss = None, 0.0, 0, False

    def __enter__(self) -> "RichProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, what: str, total: int | None = None, done: int = 0) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(what, total=total, completed=done, stats="")
        self.t0, self.seen, self.with_loss = time.perf_counter(), 0, False

    def advance(self, n: int = 1, **stats: float) -> None:
        self.seen += int(stats.get("examples", n))
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        text = f"{rate:,.0f} {self.unit}/s" if self.unit else ""
        if "loss" in stats:
            text += f"  loss {stats['loss']:.4f} acc {stats['acc']:.4f}"
            self.with_loss = True
        elif self.with_loss:  # keep the last loss shown until the next one (fit reports it every 20 steps)
            self.bar.update(self.task, advance=n)
            return
        self.bar.update(self.task, advance=n, stats=text)

    def end(self, **summary) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        if self.on_end is not None:
            self.console.print(self.on_end(summary), markup=False)
