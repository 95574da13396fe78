#!/usr/bin/env bash
# Sigma matching throughput over the OTRF recordings with every SigmaHQ Windows rule loaded.
# Unpacks the zipped datasets to a temporary folder (removed on exit), then runs the
# `sigma_match` bench binary (release build) on one thread. Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

shared=../shared
if [ ! -d "$shared/datasets/otrf" ] || [ ! -d "$shared/sigma/rules/windows" ]; then
    echo "the shared data is missing: expected $shared/datasets/otrf and $shared/sigma/rules/windows" >&2
    exit 1
fi
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
for z in "$shared"/datasets/otrf/*.zip; do
    unzip -q -o "$z" -d "$data"
done
for j in "$shared"/datasets/otrf/*.json; do
    ln -s "$(realpath "$j")" "$data/"
done
cargo bench --bench sigma_match -- "$shared/sigma/rules/windows" "$data"
