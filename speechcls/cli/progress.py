"""The one rich progress display of the CLI: it implements the library's callback protocol
(speechcls.runtime.Progress), so download, synth, featurize and fit report through the same object.

On a terminal: a rich bar per task (and, for training, one over the whole run with its ETA). Off a
terminal (CI, nohup, a pipe) there are no bars, which would print nothing or garble a log: a task whose
caller prints its own line at the end (fit: one line per epoch) shows only that line, any other task one
plain line per tenth of its total."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from speechcls.runtime import Progress


class RichProgress(Progress):
    """A rich bar per task with a rate (`unit`/s, or bytes), running loss / accuracy / LR when reported,
    an optional line printed when a task ends (`on_end`) and lines for the library's notes (`on_note`).
    Every line it prints is also appended to `log` when given (train.log). Use as a context manager."""

    def __init__(
        self,
        console,
        unit: str = "",
        transfer: bool = False,
        on_end: Callable[[dict], str] | None = None,
        disable: bool = False,
        on_note: Callable[[str, dict], list[str]] | None = None,
        log: Path | None = None,
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

        # the text columns read no markup (nor does the CLI's console): a description is shown as it is
        counts = (
            [DownloadColumn(), TransferSpeedColumn()]
            if transfer
            else [MofNCompleteColumn(), TextColumn("{task.fields[stats]}", markup=False)]
        )
        self.console, self.unit, self.transfer, self.on_end, self.on_note = console, unit, transfer, on_end, on_note
        self.log, self.disable = log, disable
        self.plain = not console.is_terminal
        self.bar = Bar(
            TextColumn("{task.description}", style="progress.description", markup=False), BarColumn(), *counts,
            TimeRemainingColumn(),
            console=console, transient=True, disable=disable or self.plain,
        )  # fmt: skip
        self.task, self.overall, self.t0, self.seen, self.with_loss = None, None, 0.0, 0, False
        self.what, self.total, self.done, self.tenths = "", None, 0, 0

    def __enter__(self) -> "RichProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def say(self, text: str) -> None:
        """Print a line whole (never wrapped, no markup) and append it to the log."""
        if self.disable:
            return
        from rich.text import Text

        # a Text: literal whatever the console's markup setting (the CLI's reads none)
        self.console.print(Text(text), soft_wrap=True)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(text + "\n")

    def note(self, kind: str, **info) -> None:
        if kind == "header" and info.get("steps_left"):  # fit: a bar over all epochs left gives the run's ETA
            self.overall = self.bar.add_task("run (at most)", total=info["steps_left"], stats="")
        for line in self.on_note(kind, info) if self.on_note else []:
            self.say(line)

    def start(self, what: str, total: int | None = None, done: int = 0) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(what, total=total, completed=done, stats="")
        self.t0, self.seen, self.with_loss = time.perf_counter(), 0, False
        self.what, self.total, self.done = what, total, done
        self.tenths = 10 * done // total if total else 0

    def advance(self, n: int = 1, **stats: float) -> None:
        self.seen += int(stats.get("examples", n))
        self.done += n
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        if self.overall is not None:
            self.bar.update(self.overall, advance=n)
        if self.plain:
            self._plain_line(rate)
            return
        text = f"{rate:,.0f} {self.unit}/s" if self.unit else ""
        if "loss" in stats:
            text += f"  loss {stats['loss']:.4f} acc {stats['acc']:.4f}"
            text += f" lr {stats['lr']:.2e}" if "lr" in stats else ""
            self.with_loss = True
        elif self.with_loss:  # keep the last loss shown until the next one (fit reports it every 20 steps)
            self.bar.update(self.task, advance=n)
            return
        self.bar.update(self.task, advance=n, stats=text)

    def _plain_line(self, rate: float) -> None:
        """Off a terminal: a line at each tenth of a task's total, unless the caller prints its own at the end."""
        if self.on_end is not None or not self.total or 10 * self.done // self.total <= self.tenths:
            return
        self.tenths = min(10 * self.done // self.total, 10)
        if self.transfer:
            counts = f"{self.done / 1e6:,.1f} of {self.total / 1e6:,.1f} MB, {rate / 1e6:,.1f} MB/s"
        else:
            counts = f"{self.done:,} of {self.total:,}"
            counts += f" {self.unit}, {rate:,.0f} {self.unit}/s" if self.unit else ""
        self.say(f"{self.what}: {10 * self.tenths}% ({counts})")

    def end(self, **summary) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        if self.on_end is not None:
            self.say(self.on_end(summary))
