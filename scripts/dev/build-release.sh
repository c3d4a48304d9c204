#!/bin/sh
# Build a release's wheel from git history, without tags (CI clones may lack them):
#   scripts/dev/build-release.sh COMMIT OUTDIR [PIP]
# e.g. the previous release, m10jobs.release.PREVIOUS.commit, into an offline wheelhouse.
set -eu
commit=$1 out=$2 pip=${3:-.venv/bin/pip}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive --format=tar "$commit" | tar -x -C "$tmp"
mkdir -p "$out"
"$pip" wheel -q --no-deps -w "$out" "$tmp"
ls "$out"
