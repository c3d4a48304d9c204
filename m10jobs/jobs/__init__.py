"""One entry module per job (its JOB, settings classes and pass), found by the registry,
plus the helpers those import: cost_common (both cost jobs), maint_* (maintenance tasks)."""
