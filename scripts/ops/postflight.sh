#!/bin/sh
# Operator wrapper for `m10 postflight`: checks every daily stats CSV against its
# .processed marker.  Loads the env file like the units (M10_ENV_FILE, default
# /etc/m10jobs/env, skipped when absent); exit code passed through
# (0 ok, 65 mismatch named on stderr/stdout).
#   scripts/ops/postflight.sh --as-of 2026-01-02
set -eu
. "$(dirname "$0")/m10-env.sh"
m10_exec m10 postflight "$@"
