#!/usr/bin/env bash
# Set up echokit-fast from a fresh checkout: Debian packages, a virtualenv in
# ./.venv, the native module (maturin develop --release), the Python extras and, with
# --test, the `test` dependency group (pyproject.toml).
# Idempotent and cache-friendly: a second run only rebuilds what changed.
#
#   bash scripts/setup.sh            # runtime (with the embedded engines: extra embedded)
#   bash scripts/setup.sh --test     # runtime + test/bench dependencies (group test)
set -euo pipefail
cd "$(dirname "$0")/.."

# The parts of the `embedded` extra, named directly (maturin develop hands the extras'
# requirements to uv, which would look the self-reference echokit-fast[asr,tts] up on the
# index), and the in-process LLM (`serve --llm-model`).
EXTRAS="asr,tts,llm"
GROUPS_=""
for arg in "$@"; do
    case "$arg" in
        --test) GROUPS_="test" ;;
        *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

# Debian packages: libopus for the Opus codec, pkg-config to find it, a C
# toolchain for -sys crates, sox (test fixtures written by another tool),
# espeak-ng (speech for the ASR tests, independent of our TTS), systemd (systemd-analyze
# verifies deploy/echokit-fast.service), chromium (the talk page's tests drive it headless
# through Playwright, never Playwright's own browser download).
DEBS=(libopus-dev pkg-config build-essential python3-venv sox libsox-fmt-all espeak-ng systemd chromium)
missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: no Rust toolchain found; install one (https://rustup.rs) or 'apt-get install cargo'" >&2
    exit 1
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# 1.16: `develop --group` (PEP 735 dependency groups).
.venv/bin/python -m pip install -q --upgrade pip "maturin>=1.16,<2"

# llama-cpp-python (the llm extra) is built once and cached (scripts/llama_wheel.sh); uv
# installs it from there instead of building it again.
UV_FIND_LINKS=$(bash scripts/llama_wheel.sh .venv/bin/python)
export UV_FIND_LINKS
# Every dependency at the version the suite last passed with (scripts/constraints.txt).
export UV_CONSTRAINT="$PWD/scripts/constraints.txt"

# Builds the Rust core in release mode and installs the package (editable)
# with its dependencies and the requested extras.
args=(develop --release --uv)
.venv/bin/python -m pip install -q uv
[ -n "$EXTRAS" ] && args+=(--extras "$EXTRAS")
[ -n "$GROUPS_" ] && args+=(--group "$GROUPS_")
# The module is abi3 (_native.abi3.so); a version-specific one left by an older build would
# be imported before it.
rm -f echokit_fast/_native.cpython-*.so
log=$(mktemp)
if ! .venv/bin/maturin "${args[@]}" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "setup: building the native module failed (log above)" >&2
    exit 1
fi
rm -f "$log"

# The virtual devices (firmware/, binaries firmware/target/release/echokit-vdev and
# xiaozhi-vdev), used by the end-to-end tests and the load bench.
log=$(mktemp)
if ! cargo build --release --quiet --manifest-path firmware/Cargo.toml >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "setup: building the virtual device (firmware/) failed (log above)" >&2
    exit 1
fi
rm -f "$log"
# On the virtualenv's PATH too, beside echokit-fast.
ln -sf ../../firmware/target/release/echokit-vdev .venv/bin/echokit-vdev
ln -sf ../../firmware/target/release/xiaozhi-vdev .venv/bin/xiaozhi-vdev
.venv/bin/python -c "import echokit_fast; print('setup: echokit-fast', echokit_fast.__version__, 'ready')"
