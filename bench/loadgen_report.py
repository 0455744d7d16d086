#!/usr/bin/env python3
"""Turns the raw runs of bench/loadgen.sh into bench/results/<stamp>.json, comparison plots and
a RESULTS.md section.

Two modes:
  loadgen_report.py --summarise-run LOADGEN_JSON
      one progress line for a single loadgen run;
  loadgen_report.py --runs-dir DIR [--json FILE] [--plots DIR] [--markdown FILE]
      reads DIR/runs.tsv, DIR/meta.tsv, the loadgen reports DIR/<n>.json and the pgbench
      outputs, prints the Markdown section on stdout, and writes the JSON, the SVG plots and
      the appended section when asked;
  loadgen_report.py --from-json bench/results/STAMP.json --plots DIR
      redraws the comparison plots of a recorded run.

Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import sys

# Medians, ranges and number formatting are the pgbench report's (bench/report.py, next to
# this file, which Python puts on the import path when it runs this script).
from report import fmt_num as num, fmt_range as rng, med, parse_pgbench, shards_text, spread as lo_hi

TARGETS = ["pgring", "pgbouncer", "direct"]
POOLERS = ["pgring", "pgbouncer"]
COLORS = {"pgring": "#d95f02", "pgbouncer": "#1b9e77", "direct": "#7570b3"}

TITLES = {
    "hs-plain-md5": "handshake, plaintext, md5",
    "hs-plain-scram": "handshake, plaintext, SCRAM (auth_file verifier)",
    "hs-plain-scram-authquery": "handshake, plaintext, SCRAM (auth_query)",
    "hs-tls-md5": "handshake, TLS full, md5",
    "hs-tls-scram": "handshake, TLS full, SCRAM",
    "hs-tls-scram-resumed": "handshake, TLS resumed, SCRAM",
    "tx-c1": "tx, 1 client, simple (added latency)",
    "tx-c50-simple": "tx, 50 clients, simple protocol",
    "tx-c50-extended": "tx, 50 clients, extended protocol",
    "tx-c50-tls": "tx, 50 clients, TLS on both hops",
    "tx-open-1000": "tx, open loop 1000/s, 50 clients",
    "tx-open-5000": "tx, open loop 5000/s, 50 clients",
    "idle-plain": "idle connections, plaintext",
    "idle-tls": "idle connections, TLS",
}


def title(w):
    if w in TITLES:
        return TITLES[w]
    m = re.match(r"tx-c(\d+)-(simple|extended)$", w)
    if m:
        return f"tx, {m.group(1)} clients over pool 20, {m.group(2)} protocol"
    return w


def read_text(path, limit=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    if limit is not None and len(text) > limit:
        text = "...(truncated)...\n" + text[-limit:]
    return text


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cpu_us(report):
    cpu = (report or {}).get("cpu") or {}
    return cpu.get("us_per_completed")


def summarise_run(path):
    r = read_json(path)
    if not r:
        return "no loadgen report"
    parts = [f"{r.get('completed', 0)} done", f"{r.get('rate_per_s', 0):.0f}/s"]
    lat = r.get("latency_us") or {}
    parts.append(f"p50 {lat.get('p50')} µs, p99 {lat.get('p99')} µs")
    if r.get("errors"):
        parts.append(f"errors {r['errors']}")
    if cpu_us(r) is not None:
        parts.append(f"pooler CPU {cpu_us(r):.1f} µs/op")
    tls = r.get("tls") or {}
    if tls.get("logins") and r.get("mode") == "handshake":
        parts.append(f"TLS resumed {tls.get('resumed')}/{tls.get('logins')}")
    pid = r.get("pid") or {}
    if pid.get("bytes_per_connection") is not None:
        parts.append(f"RSS {pid['bytes_per_connection']:.0f} B/conn")
    return ", ".join(parts)


# ---- Loading ------------------------------------------------------------------------------


def load_meta(runs_dir):
    meta = {}
    for line in read_text(os.path.join(runs_dir, "meta.tsv")).splitlines():
        key, _, value = line.partition("\t")
        meta[key] = int(value) if value.strip().isdigit() else value
    return meta


def load_runs(runs_dir):
    runs = []
    for line in read_text(os.path.join(runs_dir, "runs.tsv")).splitlines():
        cols = line.split("\t") + [""] * 11
        no, workload, rnd, target, instance, rc, t0, t1, l0, l1, args = cols[:11]
        run = {
            "run": int(no),
            "workload": workload,
            "round": int(rnd),
            "target": target,
            "instance": instance,
        }
        if rc == "skipped":
            run["skipped"] = True
            runs.append(run)
            continue
        run.update(
            {
                "loadgen_args": args,
                "exit_code": int(rc),
                "wall_seconds": round(float(t1) - float(t0), 3),
                "loadavg_1m_before": float(l0),
                "loadavg_1m_after": float(l1),
                "report": read_json(os.path.join(runs_dir, f"{no}.json")),
                "stderr_tail": read_text(os.path.join(runs_dir, f"{no}.err"), limit=1500),
            }
        )
        runs.append(run)
    return runs


def load_pgbench(runs_dir, hz):
    out = {}
    for line in read_text(os.path.join(runs_dir, "pgbench.tsv")).splitlines():
        target, rc, cb, ca = (line.split("\t") + [""] * 4)[:4]
        text = read_text(os.path.join(runs_dir, f"pgbench-{target}.out"))
        fig = parse_pgbench(text)
        cpu = (int(ca) - int(cb)) / hz if cb and ca else None
        fig.update(
            {
                "exit_code": int(rc),
                "pooler_cpu_seconds": cpu,
                "pooler_cpu_us_per_tx": cpu / fig["transactions"] * 1e6
                if cpu is not None and fig["transactions"]
                else None,
                "pgbench_stdout": text,
            }
        )
        out[target] = fig
    return out


# ---- Aggregation --------------------------------------------------------------------------


def aggregate(runs):
    workloads = []
    for r in runs:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    agg = {}
    for w in workloads:
        wr = [r for r in runs if r["workload"] == w]
        by_round = {}
        for r in wr:
            if not r.get("skipped") and r.get("report"):
                by_round.setdefault(r["round"], {})[r["target"]] = r["report"]
        rows = {}
        for t in TARGETS:
            tr = [r for r in wr if r["target"] == t]
            if not tr:
                continue
            ok = [r for r in tr if not r.get("skipped") and r.get("report") and r["report"].get("completed")]
            reps = [r["report"] for r in ok]

            def lat(key, reps=reps):
                return [(x.get("latency_us") or {}).get(key) for x in reps]

            ratios, added = [], []
            if t != "direct":
                for rnd, tg in by_round.items():
                    mine, direct = tg.get(t), tg.get("direct")
                    if mine and direct and direct.get("rate_per_s"):
                        ratios.append(mine["rate_per_s"] / direct["rate_per_s"])
                        added.append(mine["latency_us"]["p50"] - direct["latency_us"]["p50"])
            cpu = [cpu_us(x) for x in reps]
            tls_logins = sum((x.get("tls") or {}).get("logins") or 0 for x in reps)
            tls_resumed = sum((x.get("tls") or {}).get("resumed") or 0 for x in reps)
            rss = [((x.get("pid") or {}).get("bytes_per_connection")) for x in reps]
            row = {
                "runs": len(tr),
                "runs_ok": len(ok),
                "runs_skipped": len([r for r in tr if r.get("skipped")]),
                "nonzero_exits": len([r for r in tr if not r.get("skipped") and r.get("exit_code") != 0]),
                "errors_total": sum(x.get("errors") or 0 for x in reps),
                "missed_total": sum(x.get("missed") or 0 for x in reps),
                "rate_median": med([x.get("rate_per_s") for x in reps]),
                "rate_min": lo_hi([x.get("rate_per_s") for x in reps])[0],
                "rate_max": lo_hi([x.get("rate_per_s") for x in reps])[1],
                "p50_median": med(lat("p50")),
                "p90_median": med(lat("p90")),
                "p99_median": med(lat("p99")),
                "p999_median": med(lat("p999")),
                "max_median": med(lat("max")),
                "cpu_us_median": med(cpu),
                "cpu_us_min": lo_hi(cpu)[0],
                "cpu_us_max": lo_hi(cpu)[1],
                "rate_ratio_to_direct_median": med(ratios),
                "rate_ratios_to_direct": ratios,
                "added_p50_us_median": med(added),
                "added_p50_us": added,
                "tls_logins": tls_logins,
                "tls_resumed": tls_resumed,
                "auth_method": next((x.get("auth_method") for x in reps if x.get("auth_method")), None),
                "scram_keys_cached": any(x.get("scram_keys_cached") for x in reps),
                "rss_bytes_per_connection_median": med(rss),
                "rss_before_kb": med([(x.get("pid") or {}).get("rss_before_kb") for x in reps]),
                "rss_holding_kb": med([(x.get("pid") or {}).get("rss_holding_kb") for x in reps]),
                "connected_median": med([x.get("connected") for x in reps]),
                "rss_all_open": all((x.get("pid") or {}).get("all_open", True) for x in reps),
                "clients": next((x.get("clients") or x.get("concurrency") for x in reps), None),
            }
            rows[t] = row
        mode = next((r["report"]["mode"] for r in wr if r.get("report")), None)
        agg[w] = {"mode": mode, "args": next((r.get("loadgen_args") for r in wr if r.get("loadgen_args")), ""), "targets": rows}
    return agg


def get(agg, w, t, key):
    return ((agg.get(w) or {}).get("targets") or {}).get(t, {}).get(key)


def many_workload(agg, protocol="simple"):
    for w in agg:
        m = re.match(r"tx-c(\d+)-" + protocol + "$", w)
        if m and int(m.group(1)) > 50:
            return w
    return None


# ---- Formatting ---------------------------------------------------------------------------




def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{digits}f}×"


def goals(agg):
    """(goal, pgring, pgbouncer measured, pgbouncer reference figure, met) rows."""
    rows = []

    def add(label, workload, key, issue, limit, fmt, lower_is_better=True):
        pr = get(agg, workload, "pgring", key)
        pb = get(agg, workload, "pgbouncer", key)
        if pr is None:
            met = "not measured"
        elif limit is None:
            met = "—"
        else:
            ok = pr <= limit if lower_is_better else pr >= limit
            met = "yes" if ok else "no"
        rows.append((label, fmt(pr), fmt(pb), issue, met))

    us = lambda v: "—" if v is None else f"{v:.1f} µs"  # noqa: E731
    plus = lambda v: "—" if v is None else f"{v:+.0f} µs"  # noqa: E731
    kb = lambda v: "—" if v is None else f"{v / 1024:.1f} kB"  # noqa: E731
    times = lambda v: "—" if v is None else f"{v:.2f}×"  # noqa: E731

    add("pooler CPU per tx, no TLS (tx, 50 clients, simple): ≤ 8 µs", "tx-c50-simple", "cpu_us_median", "19 µs", 8, us)
    add("pooler CPU per tx, TLS on both hops (tx, 50 clients): ≤ 12 µs", "tx-c50-tls", "cpu_us_median", "34 µs", 12, us)
    add("pooler CPU per TLS + SCRAM connection (full handshake): ≤ 200 µs", "hs-tls-scram", "cpu_us_median", "730 µs", 200, us)
    add("pooler CPU per plain connection (plaintext SCRAM): ≤ 40 µs", "hs-plain-scram", "cpu_us_median", "135 µs", 40, us)
    add("added latency at 1 client (p50 − direct p50): ≤ +18 µs", "tx-c1", "added_p50_us_median", "+31 µs", 18, plus)
    add("RSS per idle plaintext client: ≤ 2 kB", "idle-plain", "rss_bytes_per_connection_median", "1.0 kB", 2048, kb)
    add("RSS per idle TLS client: ≤ 10 kB", "idle-tls", "rss_bytes_per_connection_median", "15.5 kB", 10240, kb)
    add("tps vs direct (tx, 50 clients, simple): ≥ 0.83×", "tx-c50-simple", "rate_ratio_to_direct_median", "—", 0.83, times, False)
    mw = many_workload(agg)
    if mw:
        pr = get(agg, mw, "pgring", "p99_median")
        pb = get(agg, mw, "pgbouncer", "p99_median")
        label = f"p99 at {get(agg, mw, 'pgring', 'clients') or '?'} clients over pool 20 (simple): ≤ PgBouncer's"
        fmt = lambda v: "—" if v is None else f"{v:,.0f} µs"  # noqa: E731
        met = "not measured" if pr is None or pb is None else ("yes" if pr <= pb else "no")
        rows.append((label, fmt(pr), fmt(pb), "—", met))
    return rows


def markdown(meta, agg, pgbench, json_path, plots_dir, note):
    head = str(meta.get("git_head", "unknown"))
    L = []
    L.append(f"## {meta.get('started_utc', '?')} — loadgen benchmark (`bench/loadgen.sh`), commit {head[:10]}")
    L.append("")
    L.append(f"- Date (UTC): {meta.get('started_utc')} to {meta.get('finished_utc')} ({meta.get('wall_seconds')} s in all, build included)")
    commit = f"- Commit: `{head}`"
    if meta.get("git_dirty_src"):
        commit += f" plus uncommitted changes when built ({meta.get('git_dirty_src_files', '')})"
    L.append(commit)
    L.append(f"- Machine: {meta.get('nproc')} cores ({meta.get('cpu_model', '?')}), Linux {meta.get('kernel', '?')}")
    L.append(
        f"- Software: {meta.get('postgres_version')}; {meta.get('pgbouncer_version')} ({meta.get('openssl_version')}); "
        f"{meta.get('pgring_version')} ({shards_text(meta.get('pgring_shards'))}); {meta.get('loadgen_version')}"
    )
    L.append(f"- Command: `{meta.get('command')}`")
    L.append(
        f"- Settings: {meta.get('rounds')} round(s); per run {meta.get('tx_seconds')} s (tx) or "
        f"{meta.get('hs_seconds')} s (handshake); in every workload the targets alternate, their "
        "order rotating with the round. Both poolers: transaction pooling, pool size "
        f"{meta.get('pool_size')}, the same userlist, the same ECDSA P-256 certificate "
        "(TLS 1.3), client TLS `prefer`, connection logging off. PostgreSQL with fsync off, TLS on."
    )
    if meta.get("_loads"):
        lo, hi = meta["_loads"]
        L.append(
            f"- 1-minute load average during the runs: {lo:.1f}–{hi:.1f} on {meta.get('nproc')} cores "
            "(loadgen, PostgreSQL and the pooler share them; more than that is other work on the machine)"
        )
    if note:
        L.append(f"- Note: {note}")
    if json_path:
        L.append(f"- Raw numbers: [{json_path}]({os.path.relpath(json_path, 'bench')})")
    L.append("")

    L.append("### Where pgring stands against its goals")
    L.append("")
    L.append("| goal | pgring | PgBouncer, this run | PgBouncer, reference figure | pgring meets it |")
    L.append("|---|---:|---:|---:|---|")
    for g in goals(agg):
        L.append("| " + " | ".join(g) + " |")
    L.append("")
    L.append(
        "Pooler CPU = utime + stime of the whole pooler process (all threads) from /proc/PID/stat, "
        "over the measured window (loadgen `--cpu-pid`: for tx after every client has logged in), "
        "divided by the transactions or logins completed in it. Medians across rounds."
    )
    L.append("")

    # Auth and TLS resumption.
    L.append("### Logins per CPU-second of the pooler (SCRAM from the auth_file, from auth_query; TLS resumption)")
    L.append("")
    L.append("| workload | pgring logins / CPU-s | PgBouncer logins / CPU-s | pgring / PgBouncer CPU per login | TLS resumed (pgring, PgBouncer) |")
    L.append("|---|---:|---:|---:|---|")
    for w in ["hs-plain-md5", "hs-plain-scram", "hs-plain-scram-authquery", "hs-tls-md5", "hs-tls-scram", "hs-tls-scram-resumed"]:
        if w not in agg:
            continue
        pr = get(agg, w, "pgring", "cpu_us_median")
        pb = get(agg, w, "pgbouncer", "cpu_us_median")
        res = []
        for t in POOLERS:
            logins = get(agg, w, t, "tls_logins")
            res.append(f"{get(agg, w, t, 'tls_resumed')}/{logins}" if logins else "no TLS")
        L.append(
            f"| {title(w)} | {num(1e6 / pr if pr else None)} | {num(1e6 / pb if pb else None)} "
            f"| {ratio(pr, pb)} | {', '.join(res)} |"
        )
    L.append("")

    hs = [w for w, d in agg.items() if d["mode"] == "handshake"]
    tx = [w for w, d in agg.items() if d["mode"] == "tx"]
    idle = [w for w, d in agg.items() if d["mode"] == "idle"]

    if hs:
        L.append("### Handshakes (`loadgen handshake`, 8 concurrent loops)")
        L.append("")
        L.append("| workload | target | logins/s | p50 µs | p99 µs | pooler CPU µs/login | auth | TLS resumed | errors |")
        L.append("|---|---|---:|---:|---:|---:|---|---:|---:|")
        for w in hs:
            for t in TARGETS:
                row = agg[w]["targets"].get(t)
                if not row:
                    continue
                if not row["runs_ok"]:
                    L.append(f"| {title(w)} | {t} | failed | — | — | — | — | — | {row['errors_total']} |")
                    continue
                res = f"{row['tls_resumed']}/{row['tls_logins']}" if row["tls_logins"] else "—"
                L.append(
                    f"| {title(w)} | {t} | {rng(row['rate_median'], row['rate_min'], row['rate_max'], 0)} "
                    f"| {num(row['p50_median'])} | {num(row['p99_median'])} "
                    f"| {'—' if t == 'direct' else rng(row['cpu_us_median'], row['cpu_us_min'], row['cpu_us_max'], 1)} "
                    f"| {row['auth_method'] or '—'} | {res} | {errs(row)} |"
                )
        L.append("")
        L.append(
            "The client caches its SCRAM keys (loadgen derives ClientKey/ServerKey once per salt), so "
            "the client's PBKDF2 does not slow the loop; the servers still do their full share. "
            "Channel binding is off (`channel_binding=disable`) for both poolers. Direct PostgreSQL "
            "asks every role for SCRAM (md5 rows included) and never resumes TLS sessions."
        )
        L.append("")

    if tx:
        L.append("### Transactions (`loadgen tx`, `SELECT 1`)")
        L.append("")
        L.append("| workload | target | tps | vs direct | p50 µs | p99 µs | p99.9 µs | pooler CPU µs/tx | errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for w in tx:
            for t in TARGETS:
                row = agg[w]["targets"].get(t)
                if not row:
                    continue
                if not row["runs_ok"]:
                    L.append(f"| {title(w)} | {t} | failed | — | — | — | — | — | {row['errors_total']} |")
                    continue
                vs = "1.00" if t == "direct" else num(row["rate_ratio_to_direct_median"], 2)
                L.append(
                    f"| {title(w)} | {t} | {rng(row['rate_median'], row['rate_min'], row['rate_max'], 0)} | {vs} "
                    f"| {num(row['p50_median'])} | {num(row['p99_median'])} | {num(row['p999_median'])} "
                    f"| {'—' if t == 'direct' else rng(row['cpu_us_median'], row['cpu_us_min'], row['cpu_us_max'], 1)} "
                    f"| {errs(row)} |"
                )
        L.append("")
        L.append("pgring relative to PgBouncer and to direct PostgreSQL, per workload (medians):")
        L.append("")
        L.append("| workload | CPU/tx pgring/PgBouncer | tps pgring/PgBouncer | p99 pgring/PgBouncer | tps pgring/direct | p50 pgring − direct | p50 PgBouncer − direct |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for w in tx:
            g = lambda t, k, w=w: get(agg, w, t, k)  # noqa: E731
            add_pr, add_pb = g("pgring", "added_p50_us_median"), g("pgbouncer", "added_p50_us_median")
            L.append(
                f"| {title(w)} | {ratio(g('pgring', 'cpu_us_median'), g('pgbouncer', 'cpu_us_median'))} "
                f"| {ratio(g('pgring', 'rate_median'), g('pgbouncer', 'rate_median'))} "
                f"| {ratio(g('pgring', 'p99_median'), g('pgbouncer', 'p99_median'))} "
                f"| {num(g('pgring', 'rate_ratio_to_direct_median'), 2)}× "
                f"| {'—' if add_pr is None else f'{add_pr:+.0f} µs'} | {'—' if add_pb is None else f'{add_pb:+.0f} µs'} |"
            )
        L.append("")
        L.append(
            "Open-loop latencies are measured from each transaction's intended start (coordinated "
            "omission corrected); \"vs direct\" and the p50 differences pair each pooler run with "
            "the direct run of the same round. With more clients than the pool (pool 20), the "
            "poolers queue clients while direct PostgreSQL runs one backend per client."
        )
        L.append("")

    if idle:
        L.append("### Idle connections (`loadgen idle --pid`, each pooler restarted just before)")
        L.append("")
        L.append("| workload | target | held | RSS before kB | RSS holding kB | RSS per connection | pooler CPU µs/connection | open p50 µs | errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for w in idle:
            for t in POOLERS:
                row = agg[w]["targets"].get(t)
                if not row:
                    continue
                b = row["rss_bytes_per_connection_median"]
                partial = "" if row["rss_all_open"] or b is None else " ¹"
                L.append(
                    f"| {title(w)} | {t} | {num(row['connected_median'])} of {num(row['clients'])} "
                    f"| {num(row['rss_before_kb'])} | {num(row['rss_holding_kb'])} "
                    f"| {'—' if b is None else f'{b:,.0f} B ({b / 1024:.1f} kB){partial}'} "
                    f"| {num(row['cpu_us_median'], 1)} | {num(row['p50_median'])} | {errs(row)} |"
                )
        L.append("")
        L.append(
            "RSS per connection = (VmRSS while all connections are held − VmRSS before opening) / "
            "connections held. The CPU column covers the whole idle run per connection: login, hold, close."
        )
        if any(not get(agg, w, t, "rss_all_open") for w in idle for t in POOLERS if agg[w]["targets"].get(t)):
            L.append("")
            L.append(
                "¹ Not every connection had opened before the end of the run (the opening was "
                "slower than the time allowed): the RSS was read just before the end and divided "
                "by the connections held then (the \"held\" column)."
            )
        L.append("")

    if pgbench:
        L.append(f"### Cross-check with pgbench: `pgbench -n -S -c 50 -j 2 -T {meta.get('pgbench_seconds')}`, one run per target, plaintext")
        L.append("")
        L.append("| target | tps | vs direct | pooler CPU µs/tx | latency avg ms | failed tx |")
        L.append("|---|---:|---:|---:|---:|---:|")
        dt = (pgbench.get("direct") or {}).get("tps")
        for t in TARGETS:
            p = pgbench.get(t)
            if not p:
                continue
            vs = "1.00" if t == "direct" else ("—" if not (dt and p.get("tps")) else f"{p['tps'] / dt:.2f}")
            failed = str(p.get("failed") or 0) + ("" if p.get("exit_code") == 0 else f" (exit {p.get('exit_code')})")
            L.append(
                f"| {t} | {num(p.get('tps'))} | {vs} | {num(p.get('pooler_cpu_us_per_tx'), 1)} "
                f"| {num(p.get('latency_avg_ms'), 2)} | {failed} |"
            )
        L.append("")
        L.append(
            "pgbench's select-only transaction reads a row of pgbench_accounts and its CPU figure "
            "includes the 50 logins; loadgen's `SELECT 1` figures above leave the logins out."
        )
        L.append("")

    if plots_dir:
        rel = os.path.relpath(plots_dir, "bench")
        L.append("### Plots")
        L.append("")
        links = [f"[pooler CPU per operation]({rel}/summary-cpu.svg)"]
        links += [f"[{w}]({rel}/{w}.svg)" for w in hs + tx]
        if idle:
            links.append(f"[idle RSS]({rel}/idle.svg)")
        L.append("Comparison plots: " + ", ".join(links) + ". "
                 f"loadgen's own percentile plots of the last round: `{rel}/loadgen/`.")
        L.append("")
    return "\n".join(L)


def errs(row):
    s = str(row["errors_total"])
    if row.get("missed_total"):
        s += f", {row['missed_total']} missed"
    if row["nonzero_exits"]:
        s += f" ({row['nonzero_exits']} run(s) exited non-zero)"
    if row["runs_skipped"]:
        s += f" ({row['runs_skipped']} skipped)"
    return s


# ---- SVG plots ----------------------------------------------------------------------------


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v):
    if not v or v <= 0:
        return 1.0
    import math

    p = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def label(v):
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def bar_panel(x0, y0, w, h, heading, groups, series, unit):
    """Grouped vertical bars: groups on x, one bar per series in each; values labelled."""
    out = []
    vals = [v for _, _, vs in series for v in vs if v is not None]
    top = nice_max(max(vals) if vals else 1)
    left, bottom, right, head = 58, 40, 10, 34
    pw, ph = w - left - right, h - bottom - head
    px, py = x0 + left, y0 + head
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + 18}" text-anchor="middle" font-size="13" font-weight="bold">{esc(heading)}</text>')
    for i in range(6):
        v = top * i / 5
        y = py + ph - ph * i / 5
        out.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{px - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{label(v)}</text>')
    out.append(f'<text x="{x0 + 12}" y="{py + ph / 2}" font-size="10" transform="rotate(-90 {x0 + 12} {py + ph / 2})" text-anchor="middle">{esc(unit)}</text>')
    n = max(len(groups), 1)
    gw = pw / n
    k = max(len(series), 1)
    bw = gw * 0.8 / k
    for gi, g in enumerate(groups):
        gx = px + gi * gw + gw * 0.1
        for si, (_, color, vs) in enumerate(series):
            v = vs[gi] if gi < len(vs) else None
            if v is None:
                continue
            bh = ph * v / top
            bx = gx + si * bw
            out.append(f'<rect x="{bx:.1f}" y="{py + ph - bh:.1f}" width="{bw * 0.92:.1f}" height="{bh:.1f}" fill="{color}"/>')
            out.append(f'<text x="{bx + bw * 0.46:.1f}" y="{py + ph - bh - 3:.1f}" text-anchor="middle" font-size="9">{label(v)}</text>')
        out.append(f'<text x="{px + gi * gw + gw / 2:.1f}" y="{py + ph + 14}" text-anchor="middle" font-size="10">{esc(g)}</text>')
    out.append(f'<line x1="{px}" y1="{py + ph}" x2="{px + pw}" y2="{py + ph}" stroke="#333"/>')
    # Legend.
    lx = px
    for name, color, _ in series:
        out.append(f'<rect x="{lx}" y="{py + ph + 24}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="{py + ph + 33}" font-size="10">{esc(name)}</text>')
        lx += 14 + 7 * len(name) + 16
    return out


def svg(width, height, parts, heading):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
        f'<rect width="{width}" height="{height}" fill="white"/>\n'
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{esc(heading)}</text>\n'
        + "\n".join(parts)
        + "\n</svg>\n"
    )


def plot_workload(w, data):
    pct = [("p50", "p50_median"), ("p90", "p90_median"), ("p99", "p99_median"), ("p99.9", "p999_median")]
    targets = [t for t in TARGETS if t in data["targets"] and data["targets"][t]["runs_ok"]]
    values = [data["targets"][t][k] for t in targets for _, k in pct]
    # Milliseconds when the latencies are long (queueing behind a pool, a loaded machine).
    div, unit_lat = (1000.0, "ms") if max([v or 0 for v in values] or [0]) >= 20000 else (1.0, "µs")
    series = [
        (t, COLORS[t], [None if data["targets"][t][k] is None else data["targets"][t][k] / div for _, k in pct])
        for t in targets
    ]
    parts = bar_panel(0, 24, 520, 300, f"latency percentiles, {unit_lat} (median of rounds)", [p for p, _ in pct], series, unit_lat)
    unit = "pooler CPU µs per " + ("login" if data["mode"] == "handshake" else "transaction")
    cpu_series = [(t, COLORS[t], [data["targets"][t]["cpu_us_median"]]) for t in POOLERS if t in targets]
    parts += bar_panel(520, 24, 260, 300, "pooler CPU per operation", ["pooler"], cpu_series, unit)
    return svg(780, 330, parts, title(w))


def plot_summary(agg):
    """Horizontal bars of the poolers' CPU per operation: handshakes and transactions each
    on their own scale (a login costs tens of transactions)."""
    parts = []
    row_h, left, width = 22, 300, 860
    pw = width - left - 70
    y = 36
    for mode, unit in (("handshake", "µs per login"), ("tx", "µs per transaction")):
        ws = [w for w, d in agg.items() if d["mode"] == mode]
        if not ws:
            continue
        top = nice_max(max([get(agg, w, t, "cpu_us_median") or 0 for w in ws for t in POOLERS] or [1]))
        parts.append(f'<text x="{left}" y="{y + 10}" font-size="12" font-weight="bold">pooler CPU {unit} (axis 0–{top:,.0f})</text>')
        y += 18
        y_top = y
        for w in ws:
            parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="11">{esc(title(w))}</text>')
            for i, t in enumerate(POOLERS):
                v = get(agg, w, t, "cpu_us_median")
                if v is None:
                    continue
                bw = pw * v / top
                parts.append(f'<rect x="{left}" y="{y + i * 9}" width="{bw:.1f}" height="8" fill="{COLORS[t]}"/>')
                parts.append(f'<text x="{left + bw + 3:.1f}" y="{y + i * 9 + 8}" font-size="9">{v:,.1f}</text>')
            y += row_h
        parts.append(f'<line x1="{left}" y1="{y_top - 2}" x2="{left}" y2="{y}" stroke="#333"/>')
        y += 14
    lx = left
    for t in POOLERS:
        parts.append(f'<rect x="{lx}" y="{y}" width="10" height="10" fill="{COLORS[t]}"/>')
        parts.append(f'<text x="{lx + 14}" y="{y + 9}" font-size="10">{t}</text>')
        lx += 100
    return svg(width, y + 20, parts, "pooler CPU per operation, medians of rounds (lower is better)")


def plot_idle(agg):
    ws = [w for w, d in agg.items() if d["mode"] == "idle"]
    series = [(t, COLORS[t], [(get(agg, w, t, "rss_bytes_per_connection_median") or 0) / 1024 for w in ws]) for t in POOLERS]
    parts = bar_panel(0, 24, 480, 300, "RSS per idle connection", [title(w).replace("idle connections, ", "") for w in ws], series, "kB")
    return svg(480, 330, parts, "idle connections: pooler memory per client")


def write_plots(agg, plots_dir, runs_dir):
    os.makedirs(plots_dir, exist_ok=True)
    for w, data in agg.items():
        if data["mode"] in ("handshake", "tx"):
            with open(os.path.join(plots_dir, f"{w}.svg"), "w", encoding="utf-8") as f:
                f.write(plot_workload(w, data))
    with open(os.path.join(plots_dir, "summary-cpu.svg"), "w", encoding="utf-8") as f:
        f.write(plot_summary(agg))
    if any(d["mode"] == "idle" for d in agg.values()):
        with open(os.path.join(plots_dir, "idle.svg"), "w", encoding="utf-8") as f:
            f.write(plot_idle(agg))
    src = os.path.join(runs_dir, "plots")
    if runs_dir and os.path.isdir(src):
        dst = os.path.join(plots_dir, "loadgen")
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summarise-run", metavar="LOADGEN_JSON")
    ap.add_argument("--runs-dir")
    ap.add_argument("--from-json", help="redraw the plots of a recorded run (with --plots)")
    ap.add_argument("--json")
    ap.add_argument("--plots")
    ap.add_argument("--markdown")
    ap.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""))
    a = ap.parse_args()

    if a.summarise_run:
        print(summarise_run(a.summarise_run))
        return 0
    if a.from_json:
        # Redraws the comparison plots of a recorded run (its loadgen/ plots stay as they are).
        with open(a.from_json, encoding="utf-8") as f:
            doc = json.load(f)
        if not a.plots:
            ap.error("--from-json needs --plots")
        write_plots(doc["summary"], a.plots, "")
        return 0
    if not a.runs_dir:
        ap.error("--runs-dir or --summarise-run is required")

    meta = load_meta(a.runs_dir)
    runs = load_runs(a.runs_dir)
    hz = meta.get("clk_tck") or 100
    pgbench = load_pgbench(a.runs_dir, hz)
    agg = aggregate(runs)
    loads = [r.get(k) for r in runs for k in ("loadavg_1m_before", "loadavg_1m_after") if r.get(k) is not None]
    if loads:
        meta["_loads"] = (min(loads), max(loads))
    md = markdown(meta, agg, pgbench, a.json, a.plots, a.note)
    meta.pop("_loads", None)
    if loads:
        meta["loadavg_1m_min"], meta["loadavg_1m_max"] = min(loads), max(loads)

    if a.plots:
        write_plots(agg, a.plots, a.runs_dir)
    if a.json:
        configs = {}
        for name in sorted(os.listdir(a.runs_dir)):
            if name.startswith("config-"):
                configs[name[len("config-"):]] = read_text(os.path.join(a.runs_dir, name))
        doc = {
            "kind": "loadgen",
            "meta": meta,
            "note": a.note,
            "configs": configs,
            "goals": [
                dict(zip(["goal", "pgring", "pgbouncer_this_run", "pgbouncer_issue", "met"], g))
                for g in goals(agg)
            ],
            "summary": agg,
            "pgbench": pgbench,
            "runs": runs,
        }
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if a.markdown:
        with open(a.markdown, "a", encoding="utf-8") as f:
            f.write("\n")
            f.write(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
