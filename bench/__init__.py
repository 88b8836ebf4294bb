"""The benchmark: how close the webhook function gets to what Firestore and HTTP allow.

`python -m bench` (the README's `make bench`) serves the function with functions-framework
(gunicorn) against the Firestore emulator, measures it next to its floors in the same run,
prints a table, and writes `bench/out/results.json` and `bench/out/latency.png`.
"""

__all__: list[str] = []
