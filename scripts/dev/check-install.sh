#!/usr/bin/env bash
# Stage `make install` into a temporary DESTDIR and check what it installed:
# systemd-analyze verify (no warnings), every OnCalendar parses, every service's
# exposure <= 2.0, and the installed package carries its SQL.
set -euo pipefail
command -v systemd-analyze >/dev/null || { echo "no systemd-analyze here: install check skipped"; exit 0; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
make -s install DESTDIR="$stage" PREFIX=/opt/m10jobs >/dev/null
units=$stage/etc/systemd/system
prefix=$stage/opt/m10jobs
fail=0

ls "$prefix"/lib/python3*/site-packages/m10jobs/sql/migrations/001_schema.sql >/dev/null
for f in m10jobs.toml env; do
    mode=$(stat -c %a "$stage/etc/m10jobs/$f")
    [ "$mode" = 640 ] || { echo "/etc/m10jobs/$f is mode $mode, want 640"; fail=1; }
done
# metrics on by default: node_exporter's textfile directory, in the env file and the units
metrics=/var/lib/prometheus/node-exporter
[ -d "$stage$metrics" ] || { echo "metrics directory $metrics not created"; fail=1; }
grep -qx "M10_METRICS_DIR=$metrics" "$stage/etc/m10jobs/env" || { echo "/etc/m10jobs/env does not set M10_METRICS_DIR"; fail=1; }
grep -q "M10_METRICS_DIR=$metrics$" "$stage/etc/systemd/system/m10-canary.service" || { echo "units do not set M10_METRICS_DIR"; fail=1; }
[ "$(readlink "$stage/usr/local/bin/m10")" = /opt/m10jobs/bin/m10 ] || { echo "m10 is not on PATH"; fail=1; }
for w in retry_r2_fallbacks.sh postflight.sh m10-env.sh; do
    [ -x "$prefix/bin/$w" ] || { echo "operator wrapper $w not installed in $prefix/bin"; fail=1; }
done
for f in m10jobs.rules.yml m10jobs.dashboard.json runbook.md; do
    [ -f "$prefix/share/doc/m10jobs/$f" ] || { echo "$f not installed in the doc dir"; fail=1; }
done
leftover=$(find "$stage" -name '*.lock')
[ -z "$leftover" ] || { echo "lock files installed: $leftover"; fail=1; }
"$prefix/bin/python" -m m10jobs.cli.admin jobs >/dev/null

# verify inside the staged root, with the host's own units (targets) visible there
mkdir -p "$stage/usr/lib"
mkdir -p "$stage/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$stage/usr/lib/systemd/system"
# ... and the system shell the outbox unit's ExecStopPost= runs (the restart backoff after 69)
mkdir -p "$stage/bin"
cp -L /bin/sh "$stage/bin/sh"
out=$(cd "$units" && systemd-analyze verify --root="$stage" --man=no ./*.service ./*.timer ./*.target 2>&1) || fail=1
if [ -n "$out" ]; then echo "systemd-analyze verify:"; echo "$out"; fail=1; fi

for timer in "$units"/*.timer; do
    cal=$(sed -n 's/^OnCalendar=//p' "$timer")
    systemd-analyze calendar "$cal" >/dev/null || { echo "bad OnCalendar in $timer: $cal"; fail=1; }
done
for svc in "$units"/*.service; do
    level=$(cd "$units" && systemd-analyze security --offline=true "$(basename "$svc")" 2>/dev/null \
            | sed -n 's/^→ Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    printf '%-40s exposure %s\n' "$(basename "$svc")" "$level"
    awk -v l="$level" 'BEGIN { exit !(l != "" && l <= 2.0) }' || { echo "  above 2.0"; fail=1; }
done
[ $fail = 0 ] && echo "install check: ok"
exit $fail
