#!/usr/bin/env bash
# Runs the whole test suite (lint of template.yaml, unit and black-box tests) against a
# private local stack that it starts and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
infra/bootstrap.sh
exec .local/venv/bin/python infra/stack.py test "$@"
