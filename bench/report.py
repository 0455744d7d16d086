#!/usr/bin/env python3
"""Turns the raw runs of bench/run.sh into bench/results/<stamp>.json and a RESULTS.md section.

Two modes:
  report.py --summarise-run PGBENCH_OUT CPU_BEFORE CPU_AFTER CLK_TCK
      one progress line for a single run (the CPU arguments may be empty: direct runs);
  report.py --runs-dir DIR [--json FILE] [--markdown FILE]
      reads DIR/runs.tsv, DIR/meta.tsv and the pgbench outputs DIR/<n>.out, prints the
      Markdown section on stdout, writes the JSON and appends the section when asked.

Standard library only.
"""

import argparse
import json
import os
import re
import statistics
import sys

WORKLOAD_TITLES = {
    "select-only-c50": "select-only, 50 clients",
    "select-only-c200": "select-only, 200 clients",
    "tpcb-like-c50": "tpcb-like (pgbench's default), 50 clients",
}
TARGET_ORDER = ["pgring", "pgbouncer", "direct"]


def shards_text(shards):
    """The shard count with its noun: "1 shard", "2 shards"."""
    return f"{shards} shard" if str(shards) == "1" else f"{shards} shards"


def parse_pgbench(text):
    """The figures of pgbench's summary (PostgreSQL 15 wording); missing ones are None."""

    def grab(pattern, conv=float):
        m = re.search(pattern, text, re.MULTILINE)
        return conv(m.group(1)) if m else None

    return {
        "transactions": grab(r"^number of transactions actually processed: (\d+)", int),
        "failed": grab(r"^number of failed transactions: (\d+)", int),
        "latency_avg_ms": grab(r"^latency average = ([\d.]+) ms"),
        "initial_connection_ms": grab(r"^initial connection time = ([\d.]+) ms"),
        "tps": grab(r"^tps = ([\d.]+)"),
    }


def cpu_seconds(before, after, hz):
    if before in ("", None) or after in ("", None):
        return None
    return (int(after) - int(before)) / int(hz)


def read_text(path, limit=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    if limit is not None and len(text) > limit:
        text = "...(truncated)...\n" + text[-limit:]
    return text


def summarise_run(out_path, before, after, hz):
    fig = parse_pgbench(read_text(out_path))
    parts = []
    if fig["tps"] is not None:
        parts.append(f"tps {fig['tps']:.0f}")
    if fig["latency_avg_ms"] is not None:
        parts.append(f"latency {fig['latency_avg_ms']:.2f} ms")
    if fig["failed"]:
        parts.append(f"failed {fig['failed']}")
    cpu = cpu_seconds(before, after, hz)
    if cpu is not None:
        parts.append(f"pooler CPU {cpu:.2f} s")
        if fig["transactions"]:
            parts.append(f"{cpu / fig['transactions'] * 1e6:.1f} µs/tx")
    return ", ".join(parts) if parts else "no pgbench summary"


def load_runs(runs_dir, hz):
    runs = []
    with open(os.path.join(runs_dir, "runs.tsv"), encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            cols += [""] * (12 - len(cols))
            (no, workload, rnd, target, rc, cb, ca, t0, t1, l0, l1, args) = cols[:12]
            run = {
                "run": int(no),
                "workload": workload,
                "round": int(rnd),
                "target": target,
                "pgbench_args": args,
            }
            if rc == "skipped":
                run["skipped"] = True
                runs.append(run)
                continue
            out = read_text(os.path.join(runs_dir, f"{no}.out"))
            err = read_text(os.path.join(runs_dir, f"{no}.out.err"), limit=4000)
            fig = parse_pgbench(out)
            cpu = cpu_seconds(cb, ca, hz)
            run.update(
                {
                    "exit_code": int(rc),
                    "wall_seconds": round(float(t1) - float(t0), 3),
                    "loadavg_1m_before": float(l0),
                    "loadavg_1m_after": float(l1),
                    "pooler_cpu_ticks_before": int(cb) if cb else None,
                    "pooler_cpu_ticks_after": int(ca) if ca else None,
                    "pooler_cpu_seconds": cpu,
                    **fig,
                }
            )
            if cpu is not None and fig["transactions"]:
                run["pooler_cpu_us_per_tx"] = cpu / fig["transactions"] * 1e6
            else:
                run["pooler_cpu_us_per_tx"] = None
            run["pgbench_stdout"] = out
            run["pgbench_stderr"] = err
            runs.append(run)
    return runs


def load_meta(runs_dir):
    meta = {}
    with open(os.path.join(runs_dir, "meta.tsv"), encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            meta[key] = value
    for key in ("nproc", "clk_tck", "seconds_per_run", "rounds", "scale", "pool_size",
                "pgring_shards", "git_dirty_src"):
        if key in meta and meta[key].strip().isdigit():
            meta[key] = int(meta[key])
    return meta


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def aggregate(runs):
    """Per workload and target: medians across rounds, ranges and per-round tps ratios."""
    out = {}
    workloads = []
    for r in runs:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    for w in workloads:
        wr = [r for r in runs if r["workload"] == w]
        direct_tps = {r["round"]: r.get("tps") for r in wr if r["target"] == "direct"}
        rows = {}
        for t in TARGET_ORDER:
            tr = [r for r in wr if r["target"] == t and not r.get("skipped")]
            ok = [r for r in tr if r.get("exit_code") == 0 and r.get("tps")]
            ratios = [
                r["tps"] / direct_tps[r["round"]]
                for r in ok
                if direct_tps.get(r["round"])
            ]
            rows[t] = {
                "runs": len(tr),
                "runs_ok": len(ok),
                "runs_skipped": len([r for r in wr if r["target"] == t and r.get("skipped")]),
                "tps_median": med([r["tps"] for r in ok]),
                "tps_min": spread([r["tps"] for r in ok])[0],
                "tps_max": spread([r["tps"] for r in ok])[1],
                "ratio_to_direct_median": med(ratios),
                "ratios_to_direct": ratios,
                "cpu_us_per_tx_median": med([r.get("pooler_cpu_us_per_tx") for r in ok]),
                "cpu_us_per_tx_min": spread([r.get("pooler_cpu_us_per_tx") for r in ok])[0],
                "cpu_us_per_tx_max": spread([r.get("pooler_cpu_us_per_tx") for r in ok])[1],
                "pooler_cpu_cores_median": med(
                    [
                        r["pooler_cpu_seconds"] / r["wall_seconds"]
                        for r in ok
                        if r.get("pooler_cpu_seconds") is not None and r.get("wall_seconds")
                    ]
                ),
                "latency_avg_ms_median": med([r.get("latency_avg_ms") for r in ok]),
                "failed_transactions_total": sum(r.get("failed") or 0 for r in tr),
                "nonzero_exits": len([r for r in tr if r.get("exit_code") != 0]),
            }
        out[w] = {"pgbench_args": wr[0]["pgbench_args"] if wr else "", "targets": rows}
    return out


def fmt_num(v, digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def fmt_range(med_v, lo, hi, digits):
    if med_v is None:
        return "—"
    if lo is None or hi is None or lo == hi:
        return fmt_num(med_v, digits)
    return f"{fmt_num(med_v, digits)} ({fmt_num(lo, digits)}–{fmt_num(hi, digits)})"


def markdown(meta, agg, runs, json_path):
    head = meta.get("git_head", "unknown")
    lines = []
    lines.append(f"## {meta.get('started_utc', '?')} — commit {head[:10]}")
    lines.append("")
    lines.append(f"- Date (UTC): {meta.get('started_utc')} to {meta.get('finished_utc')}")
    dirty = meta.get("git_dirty_src") or 0
    commit_line = f"- Commit: `{head}`"
    if dirty:
        commit_line += (
            f" plus uncommitted changes when pgring was built ({meta.get('git_dirty_src_files', '')})"
        )
    lines.append(commit_line)
    lines.append(
        f"- Machine: {meta.get('nproc')} cores ({meta.get('cpu_model', '?')}), "
        f"Linux {meta.get('kernel', '?')}"
    )
    lines.append(
        f"- Software: {meta.get('postgres_version')}; {meta.get('pgbouncer_version')}; "
        f"{meta.get('pgring_version')} ({shards_text(meta.get('pgring_shards'))})"
    )
    lines.append(f"- Command: `{meta.get('command')}`")
    lines.append(
        f"- Settings: {meta.get('rounds')} round(s) x {meta.get('seconds_per_run')} s per "
        f"(workload, target), targets alternating pgring, pgbouncer, direct; pgbench scale "
        f"{meta.get('scale')}; both poolers in transaction mode, pool size "
        f"{meta.get('pool_size')}, md5 auth from the same userlist; PostgreSQL with fsync off"
    )
    loads = [r.get(k) for r in runs for k in ("loadavg_1m_before", "loadavg_1m_after")]
    loads = [v for v in loads if v is not None]
    if loads:
        lines.append(
            f"- 1-minute load average during the runs: {min(loads):.1f}–{max(loads):.1f} "
            f"(on {meta.get('nproc')} cores; anything above the benchmark's own load is other "
            "work on the machine, which moves tps more than CPU/tx)"
        )
    if json_path:
        lines.append(f"- Raw numbers: [{json_path}]({os.path.relpath(json_path, 'bench')})")
    lines.append("")
    for w, data in agg.items():
        title = WORKLOAD_TITLES.get(w, w)
        lines.append(f"### {title}: `pgbench -n {data['pgbench_args']} -T {meta.get('seconds_per_run')}`")
        lines.append("")
        lines.append(
            "| target | tps (noisy) | tps vs direct (noisy) | pooler CPU µs/tx (stable) "
            "| pooler CPU, cores | latency avg ms | failed tx |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for t in TARGET_ORDER:
            row = data["targets"][t]
            if row["runs_ok"] == 0:
                why = "skipped" if row["runs_skipped"] else "failed"
                lines.append(f"| {t} | {why} | — | — | — | — | {row['failed_transactions_total']} |")
                continue
            ratio = "1.00" if t == "direct" else fmt_num(row["ratio_to_direct_median"], 2)
            cpu = (
                "—"
                if t == "direct"
                else fmt_range(
                    row["cpu_us_per_tx_median"], row["cpu_us_per_tx_min"], row["cpu_us_per_tx_max"], 1
                )
            )
            cores = "—" if t == "direct" else fmt_num(row["pooler_cpu_cores_median"], 2)
            failed = str(row["failed_transactions_total"])
            if row["nonzero_exits"]:
                failed += f" ({row['nonzero_exits']} run(s) exited non-zero)"
            lines.append(
                f"| {t} | {fmt_range(row['tps_median'], row['tps_min'], row['tps_max'], 0)} "
                f"| {ratio} | {cpu} | {cores} | {fmt_num(row['latency_avg_ms_median'], 2)} | {failed} |"
            )
        pr = data["targets"]["pgring"]["cpu_us_per_tx_median"]
        pb = data["targets"]["pgbouncer"]["cpu_us_per_tx_median"]
        if pr and pb:
            lines.append("")
            lines.append(f"pgring spends {pr / pb:.2f}x PgBouncer's CPU per transaction.")
        lines.append("")
    lines.append(
        "Medians across rounds, (min–max) in parentheses. \"tps vs direct\" is the median of the "
        "per-round ratios (each pooler run against the direct run of the same round). "
        "tps, its ratio and latency are noisy: they move with whatever else the machine does. "
        "CPU µs per transaction (the pooler's utime+stime over the run divided by the "
        "transactions pgbench completed) is the stable figure to compare across commits. "
        "\"pooler CPU, cores\" is the pooler's CPU time divided by the run's wall time."
    )
    lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summarise-run", nargs=4, metavar=("OUT", "BEFORE", "AFTER", "HZ"))
    ap.add_argument("--runs-dir")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args()

    if a.summarise_run:
        print(summarise_run(*a.summarise_run))
        return 0
    if not a.runs_dir:
        ap.error("--runs-dir or --summarise-run is required")

    meta = load_meta(a.runs_dir)
    runs = load_runs(a.runs_dir, meta.get("clk_tck", 100))
    agg = aggregate(runs)
    md = markdown(meta, agg, runs, a.json)

    if a.json:
        doc = {
            "meta": meta,
            "configs": {
                "pgring.toml": read_text(os.path.join(a.runs_dir, "pgring.toml")),
                "pgbouncer.ini": read_text(os.path.join(a.runs_dir, "pgbouncer.ini")),
            },
            "summary": agg,
            "runs": runs,
        }
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
    if a.markdown:
        new_file = not os.path.exists(a.markdown) or os.path.getsize(a.markdown) == 0
        with open(a.markdown, "a", encoding="utf-8") as f:
            if new_file:
                f.write(
                    "# pgring benchmark results\n\n"
                    "Appended by `bench/run.sh`, newest last; see bench/README.md for what the "
                    "figures mean. Compare ratios and CPU per transaction within one section: "
                    "absolute tps depends on the machine and on what else it was doing.\n\n"
                )
            else:
                f.write("\n")
            f.write(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
