#!/usr/bin/env bash
# Bounded fuzzing of the decoders, the Sigma rule loader and the config loader: every target
# runs for SECONDS, then the next one starts.
#
#   bash scripts/fuzz.sh SECONDS [TARGET...]
#       targets: auto windows evtx ecs mde w3c ocsf (decoders), sigma config (loaders)
#   FUZZ_UPDATE_CORPUS=1 bash scripts/fuzz.sh 60    # also merge new coverage into the seeds
#
# The decoder targets are in ingest/fuzz, the loader targets in config/fuzz (cargo-fuzz,
# libFuzzer, AddressSanitizer). A decoder target splits its input as a file or Kafka message
# would be split and decodes every record; `sigma` parses, compiles and runs a rule file;
# `config` reads a service config. A panic, a crash or an invariant broken (an unlisted
# dead-letter reason, an event that does not serialize, a problem without a message or line)
# stops the run with the input saved under <crate>/fuzz/artifacts/TARGET/.
#
# Seeds are the small committed corpus (<crate>/fuzz/corpus/TARGET, written from the project's
# own fixtures, playbooks and configs); the fuzzer's working corpus grows in
# <crate>/fuzz/target/corpus (not committed). The EVTX target also starts from the shared EVTX
# samples when ../shared is present.
#
# cargo-fuzz passes nightly-only rustc flags (-Zsanitizer=address, ...). Only the stable
# toolchain exists here; RUSTC_BOOTSTRAP=1 lets it accept them. The first build takes several
# minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(auto windows evtx ecs mde w3c ocsf sigma config)
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1

shared="$(pwd)/../shared/datasets"
root="$(pwd)"
for t in "${targets[@]}"; do
    case "$t" in
        sigma | config) crate=config ;;
        *) crate=ingest ;;
    esac
    cd "$root/$crate/fuzz"
    work="target/corpus/$t"
    mkdir -p "$work" "corpus/$t"
    seeds=("corpus/$t")
    max_len=65536
    if [ "$t" = evtx ]; then
        # An EVTX chunk is 64 KiB after a 4 KiB file header: inputs must hold at least one.
        max_len=140000
        if [ -d "$shared" ]; then
            seeds+=("$shared/mdecrevoisier-evtx" "$shared/evtx-samples")
        fi
    fi
    echo "==> fuzzing $t for ${secs}s (log: $crate/fuzz/target/fuzz-$t.log)"
    status=0
    cargo fuzz run "$t" "$work" "${seeds[@]}" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"target/fuzz-$t.log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done )" "target/fuzz-$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "target/fuzz-$t.log" >&2
        echo "fuzz target $t failed (exit $status); the input is in $crate/fuzz/artifacts/$t/" >&2
        exit "$status"
    fi
    # Not for evtx: its working corpus grows from the shared EVTX samples, which are not copied
    # into the repository.
    if [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ] && [ "$t" != evtx ]; then
        # Only inputs that add coverage are kept, so the committed seeds stay small.
        cargo fuzz run "$t" "corpus/$t" "$work" -- -merge=1 -max_len="$max_len" >/dev/null 2>&1
    fi
done
echo "==> fuzzing passed: ${targets[*]} (${secs}s each)"
