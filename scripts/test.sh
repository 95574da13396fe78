#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, scenario tests, and the
# end-to-end tests against a real Kafka-API broker.
#
# It installs the test broker (Tansu) when missing, starts it on a free loopback port with
# in-memory storage, points the tests at it (CHAINWATCH_TEST_BROKERS), and stops it on exit.
# It installs Prometheus (Debian's package) when missing, for the operations tests, and
# Chromium (Debian's package) for the HTML timeline test.
# Tests that need the broker fail when it is not there; none of them skip.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v tansu >/dev/null 2>&1 || ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "==> installing tansu $TANSU_VERSION (takes several minutes, once per machine)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
fi

# The operations tests (tests/ops.rs) scrape chainwatch with a real Prometheus: Debian's
# package, installed once per machine. The tests start and stop their own server.
if ! command -v prometheus >/dev/null 2>&1 && [ -z "${CHAINWATCH_PROMETHEUS:-}" ]; then
    echo "==> installing prometheus (Debian package, once per machine)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    mkdir -p target
    apt_install() {
        $sudo env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends prometheus >target/apt.log 2>&1
    }
    if ! apt_install && ! { $sudo apt-get update -qq >target/apt.log 2>&1 && apt_install; }; then
        echo "cannot install prometheus; apt's output:" >&2
        cat target/apt.log >&2
        exit 1
    fi
fi

# The HTML timeline test (tests/explain.rs) renders `chainwatch explain`'s page in headless
# Chromium: Debian's package, installed once per machine (CHAINWATCH_CHROMIUM names another
# binary). Its screenshot is kept in target/test-artifacts/.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHAINWATCH_CHROMIUM:-}" ]; then
    echo "==> installing chromium (Debian package, once per machine)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    mkdir -p target
    apt_chromium() {
        $sudo env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends chromium >target/apt-chromium.log 2>&1
    }
    if ! apt_chromium && ! { $sudo apt-get update -qq >target/apt-chromium.log 2>&1 && apt_chromium; }; then
        echo "cannot install chromium; apt's output:" >&2
        cat target/apt-chromium.log >&2
        exit 1
    fi
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p target
port=$(free_port)
echo "==> starting tansu on 127.0.0.1:$port (log: target/tansu.log)"
tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >target/tansu.log 2>&1 &
tansu_pid=$!
trap 'kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$tansu_pid" 2>/dev/null; then
        echo "tansu exited; its log:" >&2
        cat target/tansu.log >&2
        exit 1
    fi
    sleep 0.1
done
export CHAINWATCH_TEST_BROKERS="127.0.0.1:$port"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo doc (broken or private intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "==> cargo test (broker at $CHAINWATCH_TEST_BROKERS)"
cargo test --workspace --locked
echo "==> all checks passed"
