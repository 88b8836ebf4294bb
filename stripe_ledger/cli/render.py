"""What `stripe-ledger` prints: tables and JSON on stdout; on stderr the log stream (one JSON
object per line) and, while stderr is a terminal, progress bars drawn below it.

`finish` ends every command that acts on events or tasks, so they all log, print and exit
alike. rich is imported when something is drawn, so `--help` answers at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from stripe_ledger import logs

if TYPE_CHECKING:
    import argparse

    from rich.console import Console
    from rich.progress import Progress as RichProgress

    from stripe_ledger.operations import Progress

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "STATUSES",
    "STATUS_STYLES",
    "Bars",
    "configure_logging",
    "counted",
    "finish",
    "log_error",
    "log_event",
    "plain",
    "print_json",
    "print_results",
    "progress_bars",
    "shorten",
    "stdout_console",
    "when",
]

# The exit statuses `--help` promises; here, below every other module, so each can use them.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The ledger's statuses in the order listings and counts show them.
STATUSES = ("processing", "completed", "ignored", "failed", "dead")
STATUS_STYLES = {
    "completed": "green",
    "ignored": "dim",
    "processing": "cyan",
    "failed": "yellow",
    "dead": "bold red",
}


# --- the log stream ----------------------------------------------------------------------


class _LogStream(io.TextIOBase):
    """stderr for log lines; while a progress bar is drawn, lines are printed above it."""

    def __init__(self) -> None:
        super().__init__()
        self.console: Console | None = None

    def write(self, text: str) -> int:
        console = self.console
        if console is None:
            sys.stderr.write(text)
        elif text.strip():
            console.print(
                text.rstrip("\n"), soft_wrap=True, markup=False, highlight=False, emoji=False
            )
        return len(text)

    def flush(self) -> None:
        if self.console is None:
            sys.stderr.flush()


_log_stream = _LogStream()


def configure_logging() -> None:
    """Every line on stderr is one JSON object: ours, other libraries' and warnings'."""
    stream: IO[str] = _log_stream  # type: ignore[assignment]
    logs.configure(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logging.root.handlers = [handler]
    logging.root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


def log_error(message: str, command: str | None, level: int | None = None) -> None:
    """The one line a command that could not be carried out ends with."""
    logs.log(level or logging.ERROR, message, command=command)


def log_event(command: str, result: Mapping[str, Any], *, ok: bool) -> None:
    """One line per event processed, with the fields the function's delivery line has."""
    outcome = result.get("outcome")
    event_id = result["event_id"]
    message = f"{command}: event {event_id} {outcome or 'left as ' + str(result['ledger_status'])}"
    if result.get("error"):
        message += f": {result['error']}"
    logs.log(
        logging.INFO if ok else logging.ERROR,
        message,
        command=command,
        event_id=event_id,
        event_type=result.get("event_type"),
        status=outcome or result.get("ledger_status"),
        status_before=result.get("status_before", result.get("ledger_status")) or "missing",
        attempt=result.get("attempt"),
        duration_ms=result.get("duration_ms"),
        error=result.get("error"),
    )


# --- progress ----------------------------------------------------------------------------


class Bars:
    """The progress bars of one run, drawn together (none when stderr is no terminal)."""

    def __init__(self, progress: RichProgress | None) -> None:
        self._progress = progress

    def bar(self, description: str, total: int | None, *, alongside: bool = False) -> Progress:
        """A new bar (a spinner while `total` is unknown); returns its advance function.

        A new bar begins a new phase, so earlier open-ended bars are shown done, unless it
        runs `alongside` them (backfill's collections, filled at the same time)."""
        progress = self._progress
        if progress is None:
            return lambda done: None
        for task in progress.tasks if not alongside else ():
            if task.total is None:
                progress.update(task.id, total=task.completed)
        task_id = progress.add_task(description, total=total)
        return lambda done: progress.advance(task_id, done)


@contextlib.contextmanager
def progress_bars() -> Iterator[Bars]:
    """Progress bars on stderr while it is a terminal; elsewhere none (the logs tell it)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class Rate(ProgressColumn):
        """Items per second."""

        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:,.0f}/s" if task.speed else "")

    console = Console(file=sys.stderr)
    if not console.is_terminal:
        yield Bars(None)
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [Rate(), TimeElapsedColumn(), TimeRemainingColumn()]
    with RichProgress(
        *columns, console=console, redirect_stdout=False, redirect_stderr=False
    ) as progress:
        previous, _log_stream.console = _log_stream.console, console
        try:
            yield Bars(progress)
        finally:
            _log_stream.console = previous


# --- stdout ------------------------------------------------------------------------------


def stdout_console() -> Console:
    """rich on stdout; when it is no terminal, wide and without colour (for pipes and tests)."""
    from rich.console import Console

    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=200, no_color=True)
    return console


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=_json_value, ensure_ascii=False)
    sys.stdout.write("\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def finish(
    args: argparse.Namespace,
    command: str,
    results: Sequence[Any],
    *,
    nothing: str,
    summary: Mapping[str, Any],
    items: str,
    columns: Sequence[str],
    row: Callable[[Any], Sequence[Any]],
) -> int:
    """End a command that acted on events or tasks: one log line with the counts, then the
    results as JSON or as a table; exit 1 if any result is not ok."""
    counts = Counter(result.outcome for result in results)
    ok = all(result.ok for result in results)
    logs.log(
        logging.INFO if ok else logging.ERROR,
        f"{command} finished: {counted(counts) or nothing}",
        command=command,
        counts=dict(counts),
        dry_run=args.dry_run,
    )
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                **summary,
                "counts": dict(counts),
                items: [result.to_dict() for result in results],
            }
        )
    else:
        print_results(columns, [row(result) for result in results], counts, command)
    return EXIT_OK if ok else EXIT_FAILED


def print_results(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    counts: Counter[str] | None,
    command: str,
) -> None:
    """A plain table of `rows` (nothing when empty), then the counts if given."""
    from rich.table import Table

    console = stdout_console()
    if rows:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=column != "error", overflow="fold")
        for row in rows:
            table.add_row(*(plain(cell) for cell in row))
        console.print(table)
    if counts is not None:
        console.print(f"{command}: {counted(counts) or 'nothing to do'}", highlight=False)


# --- cells -------------------------------------------------------------------------------


def counted(counts: Mapping[str, int]) -> str:
    """`2 completed, 1 failed`: the non-zero counts, by name."""
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n)


def plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return when(value)
    return str(value)


def when(value: Any) -> str:
    """A time in UTC to the second, as every table shows it."""
    if not isinstance(value, datetime):
        return plain(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def shorten(value: Any, width: int) -> str:
    """`value` on one line, cut to `width` characters."""
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"
