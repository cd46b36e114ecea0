"""The pipeline: ingest, dedup policy, the delivery core, coalescing, the embedded dispatcher loop, limiter and breaker logic."""
