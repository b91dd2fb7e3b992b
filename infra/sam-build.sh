#!/usr/bin/env bash
# `sam build` as a deployment would run it, offline: SAM's cargo-lambda build method, arm64
# release binaries cross-compiled with zig (both from the venv), then the built artifacts
# listed with their sizes. Slow (a release build of every function): not part of the test
# command. Extra arguments go to `sam build`.
set -euo pipefail
cd "$(dirname "$0")/.."
infra/bootstrap.sh
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
export PATH="$PWD/.local/venv/bin:$PATH" SAM_CLI_TELEMETRY=0
started=$(date +%s)
sam build --beta-features "$@"
echo "[sam-build] built in $(( $(date +%s) - started )) s:" >&2
for dir in .aws-sam/build/*Function; do
  bootstrap="$dir/bootstrap"
  [ -f "$bootstrap" ] || { echo "[sam-build] $dir has no bootstrap" >&2; exit 1; }
  zipped=$(cd "$dir" && zip -q -9 - bootstrap | wc -c)
  printf '%-28s %s  binary %6.1f MB  zipped %5.1f MB\n' "$(basename "$dir")" \
    "$(file -b "$bootstrap" | cut -d, -f2 | xargs)" \
    "$(echo "$(stat -c %s "$bootstrap") / 1048576" | bc -l)" "$(echo "$zipped / 1048576" | bc -l)"
done
