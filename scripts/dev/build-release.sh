#!/bin/sh
# Build a release's wheel from git history, without tags (CI clones may lack them):
#   scripts/dev/build-release.sh COMMIT OUTDIR [PIP]
# e.g. the previous release, m10jobs.release.PREVIOUS.commit, into an offline wheelhouse.
# With KEEP_SOURCE=DIR the release's source tree is also left in DIR (to run its own
# `make install`, as tests/system/test_rolling_upgrade.py does on booted hosts).
set -eu
commit=$1 out=$2 pip=${3:-.venv/bin/pip}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive --format=tar "$commit" | tar -x -C "$tmp"
if [ -n "${KEEP_SOURCE:-}" ]; then
    mkdir -p "$KEEP_SOURCE"
    git archive --format=tar "$commit" | tar -x -C "$KEEP_SOURCE"
fi
mkdir -p "$out"
"$pip" wheel -q --no-deps -w "$out" "$tmp"
ls "$out"
