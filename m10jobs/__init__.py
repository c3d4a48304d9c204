"""m10jobs: L7 operations automation, one-shot jobs run by systemd timers.

Kept import-free on purpose: every console script starts here, and a pass that
finds its lock taken must finish in a few hundred milliseconds.
"""

# The release (semantic versioning), declared here only: pyproject.toml reads it
# (hatch dynamic version), m10jobs.release and --version print it.  CHANGELOG.md.
__version__ = "0.2.0"
