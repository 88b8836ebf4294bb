"""`python -m stripe_ledger.cli`: the same as the `stripe-ledger` console script."""

import sys

from stripe_ledger.cli import main

__all__: list[str] = []

sys.exit(main())
