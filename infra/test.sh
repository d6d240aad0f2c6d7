#!/usr/bin/env bash
# The test command: start the engines, run the whole suite with every CI engine leg required, stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MEMOS_REQUIRE_ENGINES="${MEMOS_REQUIRE_ENGINES:-kafka,falkordb,bolt,browser}"
PY="${PYTHON:-.venv/bin/python}"
bash infra/up.sh
trap 'bash infra/down.sh' EXIT
# shellcheck disable=SC1091
source .infra/env
"$PY" -m pytest -q -rs -p no:cacheprovider "$@"
