"""A handler module that fails to import, for the misconfiguration tests of
tests/test_one_pipeline.py (STRIPE_HANDLER_MODULES=tests.pipeline_broken_handlers). The
message carries a marker that must reach the CRITICAL log line and never an HTTP answer."""

raise RuntimeError("cannot reach billing-db.internal:5432 (marker IMPORT-DETAIL-7f3a)")
