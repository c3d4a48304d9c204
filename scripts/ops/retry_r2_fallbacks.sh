#!/bin/sh
# Operator wrapper for m10-retry-r2-fallbacks (seed: retry_r2_fallbacks.sh).
# Loads the env file the units use (M10_ENV_FILE, default /etc/m10jobs/env,
# skipped when absent), then runs the job with the given arguments; its exit
# code is passed through (0 ok, 1 failed, 65 refused file, 69 store down, 75 busy).
#   scripts/ops/retry_r2_fallbacks.sh --dry-run
set -eu
. "$(dirname "$0")/m10-env.sh"
m10_exec m10-retry-r2-fallbacks "$@"
