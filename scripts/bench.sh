#!/usr/bin/env bash
# Set up and run the benchmarks with timings, then print the markdown table of
# benches/README.md (ours vs the named peer of each group, same run).
# Extra arguments go to pytest (e.g. `-k resample`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
mkdir -p .benchmarks
.venv/bin/python -m pytest benches --benchmark-enable --benchmark-only \
    --benchmark-group-by=group --benchmark-columns=min,median,mean,stddev,rounds \
    --benchmark-sort=name --benchmark-json=.benchmarks/latest.json "$@"
.venv/bin/python benches/report.py .benchmarks/latest.json
