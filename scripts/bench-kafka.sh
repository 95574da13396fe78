#!/usr/bin/env bash
# The Kafka rows of BENCHMARKS.md (issue 9, targets 3 and 4): builds release binaries, writes
# two `chainwatch gen` workloads, and for each measurement starts its own Tansu (in-memory
# storage, a free loopback port), runs examples/kafka_bench.rs and stops the broker.
#
#   bash scripts/bench-kafka.sh                   # 500,000 records drained; 60 s at 10,000/s
#   bash scripts/bench-kafka.sh --quick           # 100,000 records; 20 s at 10,000/s
#   bash scripts/bench-kafka.sh --quick -X fetch.wait.max.ms=500   # a librdkafka property for
#                                                 # chainwatch's clients (repeatable)
#   bash scripts/bench-kafka.sh --quick --hops    # also time each chain hop by hop (two more
#                                                 # consumers on the broker, polling every 5 ms)
#
# A third run repeats the latency measurement at a rate far below chainwatch's capacity
# (LOW_RATE, 2,000/s for 20 s), to tell the pipeline's fixed delay from queueing.
#
# 1. Kafka end to end: the raw topics are loaded first (bulk producer), then drained by a plain
#    rdkafka consumer and by `chainwatch run` (ingest, correlate, sink in one process); both
#    rates in records per wall-clock second, first record consumed to last.
# 2. Detection latency: `chainwatch run` on empty topics, the workload produced at 10,000
#    records/s, each injected chain timed from its completing record handed to the producer to
#    its complete finding read from the alerts topic.
#
# Reports (JSON), configs and logs go to target/bench-kafka/<time>/. Environment:
# DRAIN_EVENTS, LATENCY_SECONDS, RATE, LOW_RATE, PARTITIONS override the sizes; LINGER_MS the
# latency driver's producer batching (default 5, librdkafka's);
# CHAINWATCH_BINARY measures another chainwatch binary (an older build, for a before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

drain_events=${DRAIN_EVENTS:-500000}
latency_seconds=${LATENCY_SECONDS:-60}
rate=${RATE:-10000}
low_rate=${LOW_RATE:-2000}
partitions=${PARTITIONS:-3}
linger_ms=${LINGER_MS:-5}
options=()   # -X KEY=VALUE, for chainwatch's clients in every run
hops=()      # --hops, for the latency runs
while [ $# -gt 0 ]; do
    case "$1" in
        --quick)
            drain_events=${DRAIN_EVENTS:-100000}
            latency_seconds=${LATENCY_SECONDS:-20}
            ;;
        -X)
            [ $# -ge 2 ] || { echo "-X needs KEY=VALUE" >&2; exit 2; }
            options+=(-X "$2")
            shift
            ;;
        --hops) hops=(--hops) ;;
        *)
            echo "unknown argument: $1 (expected --quick, -X KEY=VALUE, --hops)" >&2
            exit 2
            ;;
    esac
    shift
done

if ! command -v tansu >/dev/null 2>&1; then
    echo "tansu is not installed: bash scripts/test.sh installs it (once per machine)" >&2
    exit 1
fi

echo "==> building release binaries" >&2
cargo build --release --locked --bin chainwatch --example kafka_bench
cw=${CHAINWATCH_BINARY:-target/release/chainwatch}
bench=target/release/examples/kafka_bench

work="target/bench-kafka/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$work"
latency_events=$(python3 -c "print(int($rate * $latency_seconds))")
# Noise plus injected four-stage chains (and 2% late delivery), 2 tenants x 1,000 hosts.
"$cw" gen --out "$work/drain-workload" --tenants 2 --hosts 1000 --events "$drain_events" \
    --chains 50 >&2
"$cw" gen --out "$work/latency-workload" --tenants 2 --hosts 1000 --events "$latency_events" \
    --chains 100 --seed 2 >&2
"$cw" gen --out "$work/low-rate-workload" --tenants 2 --hosts 1000 \
    --events "$(python3 -c "print(int($low_rate * 20))")" --chains 40 --seed 3 >&2

tansu_pid=""
# CPU seconds (user and system) the broker has used, from /proc (100 ticks per second).
tansu_cpu() {
    awk '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / 100 }' "/proc/$tansu_pid/stat"
}
stop_tansu() {
    if [ -n "$tansu_pid" ]; then
        kill "$tansu_pid" 2>/dev/null || true
        wait "$tansu_pid" 2>/dev/null || true
        tansu_pid=""
    fi
}
trap stop_tansu EXIT
start_tansu() { # $1: log file; sets port and tansu_pid
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    tansu broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >"$1" 2>&1 &
    tansu_pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "tansu did not start; its log: $1" >&2
    exit 1
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "==> end to end drain ($drain_events noise records; load average $load_before)" >&2
start_tansu "$work/tansu-drain.log"
"$bench" drain --brokers "127.0.0.1:$port" --binary "$cw" --partitions "$partitions" \
    --workload "$work/drain-workload" --workdir "$work/drain" "${options[@]}" >"$work/drain.json"
tansu_cpu >"$work/tansu-cpu-drain"
stop_tansu
load_mid=$(cut -d' ' -f1-3 /proc/loadavg)

# One latency measurement on its own broker: latency_run NAME RATE writes $work/NAME.json and
# the broker's CPU seconds to $work/tansu-cpu-NAME.
latency_run() {
    start_tansu "$work/tansu-$1.log"
    "$bench" latency --brokers "127.0.0.1:$port" --binary "$cw" --partitions "$partitions" \
        --rate "$2" --workload "$work/$1-workload" --workdir "$work/$1" --linger-ms "$linger_ms" \
        "${options[@]}" "${hops[@]}" \
        >"$work/$1.json"
    tansu_cpu >"$work/tansu-cpu-$1"
    stop_tansu
}

echo "==> detection latency ($latency_seconds s at $rate records/s; load average $load_mid)" >&2
latency_run latency "$rate"

echo "==> detection latency (20 s at $low_rate records/s)" >&2
latency_run low-rate "$low_rate"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$work" "$load_before" "$load_mid" "$load_after" "${options[*]:-}" "$linger_ms" <<'EOF'
import json, sys
work, before, mid, after = sys.argv[1:5]
linger = sys.argv[6]
d = json.load(open(f"{work}/drain.json"))
l = json.load(open(f"{work}/latency.json"))
lo = json.load(open(f"{work}/low-rate.json"))
f = lambda x: f"{x:,.0f}"
print(f"machine: 2 cores; load average before {before}, between {mid}, after {after}")
print(f"work folder: {work}")
print()
print("| measure | figure | target |")
print("|---|---:|---|")
print(f"| plain rdkafka consumer draining the raw topics ({f(d['records'])} records, {d['bytes']/1e6:.0f} MB, {d['topics']} topics x {d['partitions']} partitions; {f(d['records']/d['plain_cpu_seconds'])} records/CPU-s; fetch.wait.max.ms {d.get('plain_fetch_wait_max_ms', 500)}) | {f(d['plain_rate'])} records/s | (reference) |")
print(f"| `chainwatch run` (ingest, correlate, sink) draining the same topics ({f(d['records']/d['chainwatch_cpu_seconds'])} records/CPU-s, start-up included) | {f(d['chainwatch_rate'])} records/s | >= half the plain consumer |")
print(f"| ratio chainwatch / plain consumer | **{d['ratio']:.2f}** | >= 0.5 |")
def lat(l):
    return (f"| detection latency p50 / p90 / p99 / max ({l['chains_timed']} of {l['chains']} chains, {f(l['rate_achieved'])} records/s for {l['records']/l['rate_achieved']:.0f} s; chainwatch used {l['chainwatch_cpu_seconds']/(l['records']/l['rate_achieved']):.2f} cores) | {l['p50_ms']:.0f} / {l['p90_ms']:.0f} / **{l['p99_ms']:.0f}** / {l['max_ms']:.0f} ms | p99 < 250 ms |\n"
            f"| cross-check at {f(l['rate_target'])}/s: correlate stage's histogram (Kafka timestamp to finding produced), findings within 100 / 250 / 500 / 1,000 ms | {l['histogram_within_100ms']:.0f} / {l['histogram_within_250ms']:.0f} / {l['histogram_within_500ms']:.0f} / {within(l, '1'):.0f} of {l['histogram_findings']:.0f} | |")
def within(l, le):
    for b in l["histogram_buckets"]:
        if f'le="{le}"' in b:
            return float(b.rsplit(" ", 1)[1])
    return float("nan")
print(lat(l))
print(lat(lo))
print()
print(f"chainwatch drain: {d['chainwatch_seconds']:.2f} s from the first record consumed ({d['chainwatch_seconds_with_startup']:.2f} s with start-up); plain consumer {d['plain_seconds']:.2f} s; loading took {d['load_seconds']:.2f} s; {d['alerts_produced']:.0f} findings produced for {d['chains']} chains")
cpu = {n: open(f"{work}/tansu-cpu-{n}").read().strip() for n in ("drain", "latency", "low-rate")}
print(f"broker (Tansu) CPU-seconds, whole run of each: drain {cpu['drain']} (loading included), latency {cpu['latency']}, low rate {cpu['low-rate']}")
def handed(x):
    h = x.get("handoff") or {}
    return f"{h.get('taken', 0):,.0f} taken of {h.get('handed', 0):,.0f} handed ({h.get('full', 0):,.0f} not handed, channel full)"
print(f"events from ingest to the correlator by the handoff (chainwatch_kafka_handoff_records_total): drain {handed(d)}; latency {handed(l)}; low rate {handed(lo)}")
opts = sys.argv[5] if len(sys.argv) > 5 else ""
print(f"chainwatch client options (-X): {opts or 'none (chainwatch defaults)'}; latency driver's producer linger.ms {linger}")
for x in (l, lo):
    h = x.get("hops")
    if not h:
        continue
    print(f"hops at {x['rate_target']:,.0f}/s (ms, p50 / p90 / p99 over {h['raw_sent_to_finding_read_ms']['n']} chains):")
    for k, v in h.items():
        if isinstance(v, dict):
            print(f"  {k}: {v['p50']:.0f} / {v['p90']:.0f} / {v['p99']:.0f}")
for x in (l, lo):
    if x["chains_missing"]:
        print(f"WARNING: at {x['rate_target']:.0f}/s, {x['chains_missing']} chains had no complete finding on the alerts topic within 60 s of the last record")
EOF
