#!/usr/bin/env bash
# Print the folder that holds the llama-cpp-python wheel of this machine, building it there first
# when it is missing. Used by scripts/setup.sh and scripts/wheel_check.sh.
#
#   bash scripts/llama_wheel.sh PYTHON      # PYTHON: an interpreter with pip
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: llama_wheel.sh PYTHON}

# llama-cpp-python is a source package on PyPI (it compiles llama.cpp: ~3 minutes on 2 cores).
# Build its wheel once and keep it outside the checkout, keyed by version and by this CPU's
# instruction-set flags (the build is tuned to the machine it runs on, GGML_NATIVE; a cache
# shared with a different CPU builds its own instead of crashing on a missing instruction);
# installers take it from there (uv's UV_FIND_LINKS) instead of building again. (pip's own
# wheel cache is bypassed: it would hand back a build made with other CMAKE_ARGS.)
LLAMA_VERSION=$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
cpu=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | md5sum | cut -c1-12)
WHEELS="${ECHOKIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/echokit-fast/wheels}/$cpu"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "llama_wheel: building llama-cpp-python $LLAMA_VERSION (llama.cpp, once: a few minutes)" >&2
    log=$(mktemp)
    # Only the library: no llama.cpp tools, examples, tests or multimodal (llava) parts.
    if ! CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF ${LLAMA_CMAKE_ARGS:-}" \
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PY" -m pip wheel -q --no-deps --no-cache-dir -w "$WHEELS" \
        "llama-cpp-python==$LLAMA_VERSION" >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        echo "llama_wheel: building llama-cpp-python failed (log above)" >&2
        exit 1
    fi
    rm -f "$log"
fi
echo "$WHEELS"
