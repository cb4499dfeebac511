#!/usr/bin/env bash
# Set up (scripts/setup.sh --test) and run the whole test suite: lint, the Rust
# crates' own tests, then pytest over tests/ and benches/ (benches run once each,
# untimed, so they cannot rot; time them with scripts/bench.sh), then the release wheel
# in a fresh virtualenv (scripts/wheel_check.sh).
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

echo "== the release wheel, installed on its own"
bash scripts/wheel_check.sh

# CTranslate2 picks its CPU kernels by instruction set, and Whisper's transcripts differ
# slightly between them: the ASR quality tests run again under each forced ISA this CPU
# has (the run above used the default pick), so they hold wherever CI lands.
echo "== ASR quality under each CPU instruction set"
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
for isa in AVX2 AVX512; do
    case "$isa" in
        AVX2) need=(avx2 fma) ;;
        AVX512) need=(avx512f avx512cd avx512vl avx512dq avx512bw) ;;
    esac
    if ! has "${need[@]}"; then
        echo "-- CT2_FORCE_CPU_ISA=$isa: not run, this CPU lacks ${need[*]}"
        continue
    fi
    echo "-- CT2_FORCE_CPU_ISA=$isa"
    CT2_FORCE_CPU_ISA="$isa" .venv/bin/python -m pytest -q -m asr_quality tests benches
done
