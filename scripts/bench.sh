#!/usr/bin/env bash
# The benchmark table of BENCHMARKS.md: builds the release binary, unpacks the OTRF recordings,
# generates workloads with `chainwatch gen`, runs every replay measurement as its own process
# and prints a Markdown table (each row with its command) plus an SVG plot of the scaling runs.
#
#   bash scripts/bench.sh [--quick]      # --quick: smaller workloads, one run each, no memory run
#
# Figures are events per CPU-second of the replay loop (rule loading excluded), read from
# `replay --stats`; the best of three runs, as the machine may be shared. Peak RSS comes from
# wait4. Workloads are kept in target/bench/ between runs (delete it to regenerate).
set -euo pipefail
cd "$(dirname "$0")/.."

shared=../shared
if [ ! -d "$shared/datasets/otrf" ] || [ ! -d "$shared/sigma/rules/windows" ]; then
    echo "the shared data is missing: expected $shared/datasets/otrf and $shared/sigma/rules/windows" >&2
    exit 1
fi
cargo build --release --bin chainwatch --example json_baseline
work=target/bench
otrf=$work/otrf
mkdir -p "$otrf"
for z in "$shared"/datasets/otrf/*.zip; do
    unzip -q -n "$z" -d "$otrf"
done
for j in "$shared"/datasets/otrf/*.json; do
    ln -sf "$(realpath "$j")" "$otrf/"
done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 scripts/bench.py target/release/chainwatch "$otrf" "$shared/sigma/rules/windows" \
    "$work" "$work/scaling.svg" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
