#!/bin/sh
# Sourced by the operator wrappers: load the same environment file the systemd
# units use (M10_ENV_FILE, default /etc/m10jobs/env; skipped when absent), then
# run an m10jobs command with its exit code passed through:  m10_exec m10 postflight
env_file="${M10_ENV_FILE:-/etc/m10jobs/env}"
if [ -r "$env_file" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi
m10_exec() {
    cmd=$1
    shift
    exec "${M10_BIN_DIR:+$M10_BIN_DIR/}$cmd" "$@"
}
