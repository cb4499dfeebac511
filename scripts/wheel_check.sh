#!/usr/bin/env bash
# Build the release wheel as it is shipped (abi3, manylinux2014 through zig, libopus built
# from the bundled source and linked in) and check that it works on its own: installed with
# the `embedded` extra into a fresh virtualenv whose PATH has no cargo, no system libopus
# linked, and the commands and whole device turns run from it (`serve --llm-model` too). Needs scripts/setup.sh --test
# first (maturin, zig and cmake come from the test group; the virtual device from firmware/).
#
#   bash scripts/wheel_check.sh [OUT_DIR]     # the wheel is left in OUT_DIR (default: a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_VENV=${BUILD_VENV:-$ROOT/.venv}  # where maturin, zig, cmake and uv are
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT=${1:-$WORK/dist}

echo "-- build"
# OPUS_NO_PKG: the libopus source audiopus_sys bundles, never the build machine's libopus.a.
PATH="$BUILD_VENV/bin:$PATH" OPUS_NO_PKG=1 "$BUILD_VENV/bin/maturin" build --quiet --release \
    --zig --compatibility manylinux2014 -o "$OUT" >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log" >&2; exit 1; }
wheel=$(ls "$OUT"/echokit_fast-*-cp311-abi3-manylinux*_x86_64.whl)
echo "   $(basename "$wheel")"

echo "-- install into a fresh virtualenv (no cargo on PATH)"
python3 -m venv "$WORK/venv"
# llm: the in-process LLM, llama-cpp-python from the machine's cached build
# (scripts/llama_wheel.sh); gguf writes the test's tiny model.
UV_FIND_LINKS=$(bash scripts/llama_wheel.sh "$BUILD_VENV/bin/python") \
    UV_CONSTRAINT="$ROOT/scripts/constraints.txt" \
    "$BUILD_VENV/bin/uv" pip install --quiet --python "$WORK/venv/bin/python" \
    "$wheel[embedded,llm]" pytest pytest-benchmark "gguf==0.19.0"
CLEAN_PATH="$WORK/venv/bin:/usr/local/bin:/usr/bin:/bin"
# PYTHONSAFEPATH: no interpreter (the servers the tests spawn too) imports the checkout's
# echokit_fast from the working directory.
run() { env -u PYTHONPATH PYTHONSAFEPATH=1 PATH="$CLEAN_PATH" "$@"; }
if run sh -c 'command -v cargo' >/dev/null; then
    echo "wheel_check: cargo is still on the clean PATH" >&2
    exit 1
fi
site=$(run python -c 'import echokit_fast, pathlib; print(pathlib.Path(echokit_fast.__file__).parent)')
case "$site" in "$WORK"/venv/*) ;; *) echo "wheel_check: imported $site, not the wheel" >&2; exit 1 ;; esac

echo "-- the talk page's files are in the wheel"
for f in index.html console.css talk.js msgpack.js mic-worklet.js; do
    [ -f "$site/devices/web/static/$f" ] ||
        { echo "wheel_check: devices/web/static/$f is not in the wheel" >&2; exit 1; }
done

echo "-- the native module links no libopus"
module=$(ls "$site"/_native*.so)
ldd "$module" | tee "$WORK/ldd.txt" | sed 's/^/   /'
if grep -qi opus "$WORK/ldd.txt"; then
    echo "wheel_check: $module links a system libopus" >&2
    exit 1
fi

echo "-- the commands"
expected="echokit-fast $(sed -n 's/^version = "\(.*\)"/\1/p' native/Cargo.toml | head -1)"
got=$(run echokit-fast --version)
[ "$got" = "$expected" ] || { echo "wheel_check: --version said '$got', expected '$expected'" >&2; exit 1; }
echo "   $got"
run echokit-fast say -o "$WORK/say.wav" "The wheel works on its own." >/dev/null
run echokit-fast vad "$WORK/say.wav" | tee "$WORK/vad.json" | sed 's/^/   vad: /'
grep -q '"start"' "$WORK/vad.json" || { echo "wheel_check: vad found no speech" >&2; exit 1; }
heard=$(ECHOKIT_FAST_CACHE="$WORK/cache" run echokit-fast transcribe --language en "$WORK/say.wav")
echo "   transcribe: $heard"
case "${heard,,}" in *wheel*) ;; *) echo "wheel_check: transcribe heard '$heard'" >&2; exit 1 ;; esac

echo "-- serve and device turns (echokit-vdev), from the wheel"
# a config with a stand-in LLM; then the embedded default with the LLM in-process
# (serve --llm-model, a tiny random GGUF): no other server at all
ECHOKIT_FAST_CACHE="$WORK/cache" run python -m pytest -q -p no:cacheprovider \
    "tests/test_vdev_e2e.py::test_two_turn_conversation_with_a_k0_reconnect" \
    "tests/test_local_llm.py::test_serve_llm_model_holds_a_voice_turn_alone"
