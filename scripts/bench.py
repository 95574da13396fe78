#!/usr/bin/env python3
"""chainwatch benchmark table: called by scripts/bench.sh (which builds the release binary and
unpacks the OTRF recordings). Runs every measurement as a separate `chainwatch` process, reads
its `--stats` JSON (records read, CPU seconds of the replay loop; rule loading is not counted)
and its peak RSS, prints a Markdown table with the command of each row, and writes an SVG plot
of the scaling runs.

usage: bench.py BINARY OTRF_DIR SIGMA_WINDOWS_DIR WORK_DIR SVG_OUT [--quick]
"""

import json
import os
import resource
import subprocess
import sys

BIN, OTRF, SIGMA, WORK, SVG = sys.argv[1:6]
# The yardstick binary (examples/json_baseline.rs), built next to chainwatch.
BASELINE = os.path.join(os.path.dirname(BIN), "examples", "json_baseline")
QUICK = "--quick" in sys.argv
CHAIN = "playbooks/exchange-to-ransomware.yml"
ROWS = []


def replay(rules, files, extra=(), repeat=1):
    """Best of `repeat` replays: (events per CPU-second, stats, peak RSS bytes)."""
    best = None
    for _ in range(repeat):
        stats = os.path.join(WORK, "stats.json")
        args = ["replay", "--output", "json", "--stats", stats] + list(extra)
        for r in rules:
            args += ["--rules", r]
        args += files
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execv(BIN, [BIN] + args)
        _, status, usage = os.wait4(pid, 0)
        if status != 0:
            sys.exit(f"chainwatch {' '.join(args)} failed ({status})")
        with open(stats) as f:
            s = json.load(f)
        rate = s["records_read"] / s["cpu_seconds"] if s["cpu_seconds"] else 0.0
        rss = usage.ru_maxrss * 1024
        if best is None or rate > best[0]:
            best = (rate, s, rss)
    return best


def gen(name, *args):
    # The folder names the arguments: a workload is reused only when it is the same one.
    out = os.path.join(WORK, name + "-" + "_".join(a.strip("-") for a in args))
    if not os.path.exists(os.path.join(out, "answers.json")):
        subprocess.run([BIN, "gen", "--out", out] + list(args), check=True,
                       stdout=subprocess.DEVNULL)
    files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.startswith("telemetry."))
    return out, files


def cmd(rules, files, extra=()):
    r = " ".join(f"--rules {x}" for x in rules)
    e = " ".join(extra)
    return f"chainwatch replay {e} {r} {files}".replace("  ", " ")


def row(measure, figure, target, command):
    ROWS.append((measure, figure, target, command))
    print(f"  {measure}: {figure}", file=sys.stderr, flush=True)


def fmt(n):
    return f"{n:,.0f}"


def rule_subset(n):
    """A folder of the first n SigmaHQ Windows rule files (sorted paths), as symlinks."""
    files = []
    for root, _, names in os.walk(SIGMA):
        files += [os.path.join(root, x) for x in names if x.endswith(".yml")]
    files.sort()
    d = os.path.join(WORK, f"rules{n}")
    if not os.path.isdir(d):
        os.makedirs(d)
        for i, f in enumerate(files[:n]):
            os.symlink(os.path.abspath(f), os.path.join(d, f"{i:05}.yml"))
    return d


otrf = [OTRF]
repeat = 1 if QUICK else 3

# 0. The yardstick: parsing every line into a serde_json::Value, same files, same minutes.
base = None
for _ in range(repeat):
    out = subprocess.run([BASELINE, OTRF], check=True, capture_output=True, text=True).stdout
    b = json.loads(out)
    if base is None or b["records_per_cpu_second"] > base["records_per_cpu_second"]:
        base = b
row(f"yardstick: parse every OTRF line into `serde_json::Value`, nothing else ({fmt(base['records'])} lines)",
    f"{fmt(base['records_per_cpu_second'])} ev/CPU-s", "(reference)",
    "target/release/examples/json_baseline OTRF_DIR")

# 1. The four-stage chain over real Windows events, fast path and reference decode.
rate, s, _ = replay([CHAIN], otrf, repeat=repeat)
row(f"replay, four-stage chain, OTRF real events ({fmt(s['records_read'])} events, 175 MB), fast path",
    f"**{fmt(rate)} ev/CPU-s** ({rate / base['records_per_cpu_second']:.2f}x the yardstick)",
    ">= 330,000 and >= the yardstick", cmd([CHAIN], "OTRF_DIR"))
rate_full, s, _ = replay([CHAIN], otrf, ["--full"], repeat=repeat)
row("same, reference decode (`--full`)", f"{fmt(rate_full)} ev/CPU-s", "(reference)",
    cmd([CHAIN], "OTRF_DIR", ["--full"]))

# 2. All SigmaHQ Windows rules.
rate, s, _ = replay([SIGMA], otrf, repeat=repeat)
row(f"replay, all SigmaHQ Windows rules, OTRF ({s['alerts']} alerts)",
    f"**{fmt(rate)} ev/CPU-s**", ">= 150,000", cmd(["SIGMA_WINDOWS"], "OTRF_DIR"))

# Generated workload (shorter events: the example's shapes, ~700 B).
n_events = 200_000 if QUICK else 1_000_000
out, files = gen("w1", "--tenants", "1", "--hosts", "10000", "--events", str(n_events),
                 "--chains", "50")
rate, s, _ = replay([CHAIN], files, ["--tenant", "tenant0000"], repeat=repeat)
row(f"replay, four-stage chain, generated workload ({fmt(s['records_read'])} events, 10,000 hosts, 50 chains)",
    f"**{fmt(rate)} ev/CPU-s**", ">= 330,000",
    f"chainwatch gen --tenants 1 --hosts 10000 --events {n_events} --chains 50; " + cmd([CHAIN], "telemetry.tenant0000.windows.jsonl", ["--tenant tenant0000"]))
rate, s, _ = replay([SIGMA], files, ["--tenant", "tenant0000"], repeat=repeat)
row("replay, all SigmaHQ Windows rules, generated workload",
    f"{fmt(rate)} ev/CPU-s", ">= 150,000", cmd(["SIGMA_WINDOWS"], "(same)", ["--tenant tenant0000"]))

# 3. Scaling over rule counts (OTRF).
rule_points = []
for n in [10, 100, 1000, 0]:
    d = SIGMA if n == 0 else rule_subset(n)
    rate, s, _ = replay([d], otrf, repeat=repeat)
    label = "all (2,407)" if n == 0 else fmt(n)
    rule_points.append((2407 if n == 0 else n, rate))
    row(f"rule count scaling: {label} SigmaHQ Windows rules, OTRF", f"{fmt(rate)} ev/CPU-s", "",
        cmd([f"FIRST_{n or 'ALL'}_RULES"], "OTRF_DIR"))

# 4. Scaling over hosts (one tenant) and tenants (`--tenant-field`), fast path.
host_points = []
n_noise = 100_000 if QUICK else 500_000
for hosts in [1_000, 10_000, 100_000, 1_000_000]:
    _, files = gen(f"h{hosts}", "--tenants", "1", "--hosts", str(hosts), "--events",
                   str(n_noise), "--chains", "20")
    rate, s, _ = replay([CHAIN], files, ["--tenant", "tenant0000"], repeat=1)
    host_points.append((hosts, rate))
    row(f"host scaling: {fmt(hosts)} hosts, 1 tenant, {fmt(n_noise)} events, four-stage chain",
        f"{fmt(rate)} ev/CPU-s", "",
        f"chainwatch gen --tenants 1 --hosts {hosts} --events {n_noise} --chains 20; "
        + cmd([CHAIN], "DIR/telemetry.*", ["--tenant tenant0000"]))
tenant_points = []
for tenants in [1, 10, 100, 1000]:
    _, files = gen(f"t{tenants}", "--tenants", str(tenants), "--hosts", "1000", "--events",
                   str(n_noise), "--chains", str(tenants), "--tenant-field", "customer")
    rate, s, _ = replay([CHAIN], files, ["--tenant-field", "customer"], repeat=1)
    tenant_points.append((tenants, rate))
    row(f"tenant scaling: {fmt(tenants)} tenants x 1,000 hosts, {fmt(n_noise)} events (`--tenant-field`)",
        f"{fmt(rate)} ev/CPU-s", "",
        f"chainwatch gen --tenants {tenants} --hosts 1000 --events {n_noise} --chains {tenants} --tenant-field customer; "
        + cmd([CHAIN], "DIR/telemetry.*", ["--tenant-field customer"]))

# 5. Memory: one partial chain on each of 1,000,000 hosts (10 tenants x 100,000, the engine's
# per-tenant cap), against 1,000 hosts.
if not QUICK:
    _, small = gen("m1k", "--tenants", "10", "--hosts", "100", "--partials", "100", "--events",
                   "0", "--chains", "0", "--tenant-field", "customer")
    _, big = gen("m1m", "--tenants", "10", "--hosts", "100000", "--partials", "100000",
                 "--events", "0", "--chains", "0", "--tenant-field", "customer")
    _, s1, rss1 = replay([CHAIN], small, ["--tenant-field", "customer"])
    _, s2, rss2 = replay([CHAIN], big, ["--tenant-field", "customer"])
    per = (rss2 - rss1) / max(1, s2["partial_chains"] - s1["partial_chains"])
    row(f"peak RSS with {fmt(s2['partial_chains'])} partial chains on 1,000,000 hosts",
        f"**{rss2 / 2**30:.2f} GiB**", "<= 1.5 GiB",
        "chainwatch gen --tenants 10 --hosts 100000 --partials 100000 --events 0 --chains 0 --tenant-field customer; "
        + cmd([CHAIN], "DIR/telemetry.*", ["--tenant-field customer"]))
    row("RSS per partial chain, evidence included ((RSS at 1M - RSS at 1k) / chains)",
        f"**{fmt(per)} B**", "<= 300 B beyond evidence", "(the two runs above)")

print("| measure | figure | target | command |")
print("|---|---:|---|---|")
for m, f, t, c in ROWS:
    print(f"| {m} | {f} | {t} | `{c}` |")


def svg(panels, path):
    """Small log-x line plots, one panel per series: (title, x label, [(x, y)])."""
    import math
    w, h, pad = 330, 240, 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(panels)}" height="{h}" '
             'font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']
    for i, (title, xlabel, pts) in enumerate(panels):
        ox = i * w
        xs = [math.log10(x) for x, _ in pts]
        ymax = max(y for _, y in pts) * 1.15
        x0, x1 = min(xs), max(xs)
        sx = lambda x: ox + pad + (math.log10(x) - x0) / ((x1 - x0) or 1) * (w - 2 * pad)
        sy = lambda y: h - pad + 10 - y / ymax * (h - 2 * pad)
        parts.append(f'<text x="{ox + w / 2}" y="16" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{ox + pad}" y1="{sy(0)}" x2="{ox + w - pad}" y2="{sy(0)}" stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="{sy(0)}" x2="{ox + pad}" y2="{sy(ymax)}" stroke="black"/>')
        for k in range(0, 5):
            y = ymax * k / 4
            parts.append(f'<text x="{ox + pad - 4}" y="{sy(y) + 4}" text-anchor="end">{y / 1000:.0f}k</text>')
        parts.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="'
                     + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f77b4"/>')
            parts.append(f'<text x="{sx(x):.1f}" y="{sy(0) + 14}" text-anchor="middle">{x:,}</text>')
        parts.append(f'<text x="{ox + w / 2}" y="{h - 8}" text-anchor="middle">{xlabel}</text>')
    parts.append('<text x="4" y="30" font-size="10">events per CPU-second</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


svg([("Rules (OTRF)", "SigmaHQ Windows rules loaded", rule_points),
     ("Hosts (1 tenant)", "hosts", host_points),
     ("Tenants (1,000 hosts each)", "tenants", tenant_points)], SVG)
print(f"\nplot: {SVG}", file=sys.stderr)
