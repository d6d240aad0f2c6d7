#!/usr/bin/env bash
# Stop every engine started by infra/up.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
for engine in kafka falkordb; do
  bash "infra/${engine}.sh" stop || true
done
