#!/usr/bin/env bash
# Set up and run the benchmarks with timings. Every suite measures our code and
# its named peer in the same run; compare the `mean` column within a group.
# Extra arguments go to pytest (e.g. `-k resample`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/python -m pytest benches --benchmark-enable --benchmark-only \
    --benchmark-group-by=group --benchmark-columns=min,mean,median,stddev,rounds \
    --benchmark-sort=name "$@"
