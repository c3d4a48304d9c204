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
# The command is taken from M10_BIN_DIR when set, else from beside the wrapper when it
# is there (an install: `make install` puts the wrappers in $(PREFIX)/bin next to the
# job scripts), else from PATH (a checkout with its venv on PATH).
m10_exec() {
    cmd=$1
    shift
    dir=${M10_BIN_DIR:-}
    if [ -z "$dir" ] && [ -x "$(dirname "$0")/$cmd" ]; then
        dir=$(dirname "$0")
    fi
    exec "${dir:+$dir/}$cmd" "$@"
}
