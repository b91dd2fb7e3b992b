#!/usr/bin/env bash
# The cold-start benchmark (infra/bench-cold-start.py): release builds of every function and
# of a bare lambda_http hello world, each started under a Lambda runtime API stand-in against
# a private local stack. Slow (a release build per function): not part of the test command.
# `--docs` writes the table into docs/benchmarks.md; `--help` for the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
infra/bootstrap.sh
exec .local/venv/bin/python infra/bench-cold-start.py "$@"
