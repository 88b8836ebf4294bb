"""How fast `stripe-ledger backfill` fills the projections: `python -m bench.backfill`.

Serves N objects (customers, subscriptions, invoices, payment intents, in equal parts) from
the local fake of Stripe's list API (tests/fake_stripe.py), runs the console script against
a fresh project of the emulator (FIRESTORE_EMULATOR_HOST, or one started here) with the
default workers, and prints objects per second, Firestore commits per object, list requests,
and what a 1,000,000-object account would take: the pages of one family are read one after
another (each needs the last ID of the one before), so a family of n objects takes n / 100
times the seconds of one page (Stripe's read latency plus one commit); families run
`--workers` at a time. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.ops_list import emulator_host
from tests.fake_stripe import FakeStripe

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "stripe-ledger"
KINDS = {"customer": "cus", "subscription": "sub", "invoice": "in", "payment_intent": "pi"}
# Stripe's list latency for a page of 100, as assumed for the 1,000,000-object estimate.
STRIPE_PAGE_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "backfill.json")
    args = parser.parse_args(argv)
    now = int(time.time())
    with emulator_host() as host, FakeStripe() as fake:
        fake.serve_lists()
        each = args.objects // len(KINDS)
        for kind, prefix in KINDS.items():
            for n in range(each):
                obj = {"id": f"{prefix}_{n:07d}", "object": kind, "created": now - n}
                fake.put_object({**obj, "status": "active", "livemode": False})
        project = f"bench-backfill-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": project,
            "STRIPE_API_KEY": fake.api_key,
            "STRIPE_API_BASE": fake.url,
        }
        print(f"backfilling {each * len(KINDS)} objects into {project} on {host} ...", flush=True)
        started = time.perf_counter()
        run = subprocess.run(  # noqa: S603 - our own console script
            [str(CLI), "backfill", "--workers", str(args.workers), "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return 1
        report = json.loads(run.stdout)
        pages = sum(c["pages"] for c in report["collections"])
        objects = sum(c["objects"] for c in report["collections"])
    page_seconds = seconds / max(1, pages) * min(args.workers, len(KINDS))
    one_family = 1_000_000 / 100 * (page_seconds + STRIPE_PAGE_SECONDS)
    figures = {
        "objects": objects,
        "seconds": round(seconds, 2),
        "objects_per_second": round(objects / seconds, 1),
        "list_requests": pages,
        "commits_per_object": round(pages / max(1, objects), 4),
        "seconds_per_page_here": round(page_seconds, 3),
        "million_objects_one_family_hours": round(one_family / 3600, 2),
        "million_objects_four_families_hours": round(one_family / 4 / 3600, 2),
        "cpus": os.cpu_count(),
    }
    for name, value in figures.items():
        print(f"  {name:38} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
