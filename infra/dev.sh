#!/usr/bin/env bash
# Starts the whole local stack and serves the API. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
infra/bootstrap.sh
exec .local/venv/bin/python infra/stack.py serve "$@"
