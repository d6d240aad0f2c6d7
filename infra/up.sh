#!/usr/bin/env bash
# Start the engines the tests need on loopback (from PyPI wheels in .venv) and write .infra/env.
# Usage: infra/up.sh [kafka] [falkordb]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .infra
engines=("$@")
[ ${#engines[@]} -eq 0 ] && engines=(kafka falkordb)
: > .infra/env
for engine in "${engines[@]}"; do
  bash "infra/${engine}.sh" start
  cat ".infra/env.${engine}" >> .infra/env
done
echo "engines up: ${engines[*]} (source .infra/env)"
