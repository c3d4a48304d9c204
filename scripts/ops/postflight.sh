#!/bin/sh
# Operator wrapper for `m10 postflight`: checks every daily stats CSV against its
# .processed marker.  Loads the env file like the units (M10_ENV_FILE, default
# /etc/m10jobs/m10jobs.env, skipped when absent); exit code passed through
# (0 ok, 65 mismatch named on stderr/stdout).
#   scripts/ops/postflight.sh --as-of 2026-01-02
set -eu
env_file="${M10_ENV_FILE:-/etc/m10jobs/m10jobs.env}"
if [ -r "$env_file" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi
exec "${M10_BIN_DIR:+$M10_BIN_DIR/}m10" postflight "$@"
