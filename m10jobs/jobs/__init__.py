"""One package per flow family, found by the registry: its __init__ exposes JOB (or JOBS)."""
