#!/usr/bin/env bash
# Set up (scripts/setup.sh --test) and run the whole test suite: lint, the Rust
# crates' own tests, then pytest over tests/ and benches/ (benches run once each,
# untimed, so they cannot rot; time them with scripts/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

echo "== lint"
.venv/bin/ruff check echokit_fast tests benches
.venv/bin/ruff format --check echokit_fast tests benches
for crate in native firmware; do
    (cd "$crate" && cargo fmt --check && cargo clippy --quiet --all-targets -- -D warnings)
done

echo "== cargo test"
for crate in native firmware; do
    (cd "$crate" && cargo test --quiet)
done

echo "== pytest"
.venv/bin/python -m pytest tests benches "$@"
