"""Where the served function's CPU goes: py-spy on a served copy under load.

`python -m bench.profile` serves `main.py` as Cloud Functions does (functions-framework on
gunicorn), against FIRESTORE_EMULATOR_HOST or an emulator it starts, warms it up, then
samples its worker with py-spy (only the thread holding the GIL, so samples are CPU spent in
Python) while first deliveries of PaymentIntent events arrive at concurrency 16. It prints
the function's CPU per delivery (from /proc, over the same run) and the functions that
account for the largest shares of the samples, inclusive of what they call; docs/scaling.md
quotes them.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._events import payment_event, signed
from bench._load import closed_loop
from bench._serve import ROOT, FunctionProcess, function_env, post
from bench.run import _emulator

__all__ = ["main", "top_entries"]

_PY_SPY = Path(sys.executable).parent / "py-spy"
_LINE = re.compile(r":\d+\)")
# Frames every request passes through (gunicorn, Flask, functions-framework): not findings.
_PLUMBING = re.compile(
    r"threading\.py|concurrent/futures|gunicorn/|flask/|functions_framework/|click/|"
    r"functions-framework\)|api_core/(retry|timeout)|grpc/_interceptor"
)


def top_entries(raw: str, count: int) -> tuple[int, list[tuple[float, str]]]:
    """From py-spy's raw output (one `frame;frame;... samples` line per stack): the number of
    samples, and the `count` functions with the largest inclusive share, plumbing left out."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, samples = line.rsplit(" ", 1)
        total += int(samples)
        for frame in {_LINE.sub(")", frame) for frame in stack.split(";")}:
            inclusive[frame] += int(samples)
    found = [
        (100 * samples / total, frame)
        for frame, samples in inclusive.most_common()
        if not _PLUMBING.search(frame)
    ]
    return total, found[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=1200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with _emulator() as host:
        env = function_env(host, f"bench-profile-{os.getpid()}")
        server = FunctionProcess(ROOT / "main.py", "stripe_webhook", env, threads=16)
        server.start(lambda: signed(payment_event()))
        out = Path(tempfile.mkstemp(prefix="py-spy-", suffix=".txt")[1])
        try:
            for _ in range(50):
                post(server.port, *signed(payment_event()))
            bodies = [signed(payment_event()) for _ in range(args.deliveries)]
            command = [str(_PY_SPY), "record", "--pid", str(server.pids()[-1]), "--rate", "200"]
            command += ["--format", "raw", "--output", str(out), "--nonblocking", "--gil"]
            spy = subprocess.Popen(  # noqa: S603 - a fixed command line
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)  # py-spy attaches

            def deliver(index: int) -> None:
                post(server.port, *bodies[index])

            before = server.cpu_seconds()
            loop = closed_loop(deliver, args.deliveries, args.concurrency)
            cpu = server.cpu_seconds() - before
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
            spy.wait(timeout=30)
        finally:
            server.stop()
            server.remove_log()
        total, entries = top_entries(out.read_text(), args.top)
        out.unlink()
    print(
        f"{loop.total} first deliveries at concurrency {args.concurrency}: "
        f"{loop.per_second:.0f}/s, the function's CPU {1000 * cpu / loop.total:.2f} ms each; "
        f"{total} samples of the thread holding the GIL"
    )
    for share, frame in entries:
        print(f"  {share:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
