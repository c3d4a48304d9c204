"""m10jobs: L7 operations automation, one-shot jobs run by systemd timers.

Kept import-free on purpose: every console script starts here, and a pass that
finds its lock taken must finish in a few hundred milliseconds.
"""

__version__ = "0.1.0"
