"""Markdown tables and PNG plots from ``results.json`` (written by bench/run.py).

Figures are medians over the runs with the min-max range; ratios are WSGI+
divided by the peer, from the same run, so machine noise mostly cancels.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

BASELINE = "wsgiplus"
COMPILED = "wsgiplus-compiled"  # the optional mypyc build, when the run had it


def _vals(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r, dict) and r.get(key) is not None]


def med(runs: list[dict[str, Any]], key: str) -> float | None:
    v = _vals(runs, key)
    return statistics.median(v) if v else None


def span(runs: list[dict[str, Any]], key: str, fmt: str = "{:,.0f}", scale: float = 1.0) -> str:
    v = [x * scale for x in _vals(runs, key)]
    if not v:
        return "-"
    m = statistics.median(v)
    if len(v) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(v))}-{fmt.format(max(v))})"


def _f(x: float | None, fmt: str = "{:,.0f}", scale: float = 1.0) -> str:
    return "-" if x is None else fmt.format(x * scale)


def _ratio(base: float | None, other: float | None) -> str:
    if not base or not other:
        return "-"
    return f"{base / other:.2f}x"


def paired(base_runs: list[dict[str, Any]], runs: list[dict[str, Any]], key: str) -> float | None:
    """Median over repetitions of WSGI+'s figure / the peer's in the same round.

    Rounds run servers back to back (round-robin), so pairing a round's figures
    cancels most of the machine's slow drift; falls back to a ratio of medians.
    """
    pairs = [a[key] / b[key] for a, b in zip(base_runs, runs, strict=False)
             if a.get(key) and b.get(key)]
    if len(pairs) == len(base_runs) == len(runs) and pairs:
        return statistics.median(pairs)
    base, other = med(base_runs, key), med(runs, key)
    return base / other if base and other else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _wrk_table(data: dict[str, list[dict[str, Any]]], labels: dict[str, str], extra: list[tuple[str, str, str]] = ()) -> list[str]:
    base_runs = data.get(BASELINE, [])
    header = ["server", "req/s median (min-max)", "p50 ms", "p99 ms", "errors", "CPU us/req", "peak RSS MB"]
    header += [h for h, _, _ in extra] + ["WSGI+ / this"]
    compiled_runs = data.get(COMPILED)
    if compiled_runs:
        header.append("WSGI+ compiled / this")
    rows = []
    for name, runs in data.items():
        row = [labels.get(name, name), span(runs, "rps"), _f(med(runs, "p50_us"), "{:.1f}", 1e-3),
               _f(med(runs, "p99_us"), "{:.1f}", 1e-3), _f(med(runs, "errors")), _f(med(runs, "cpu_us_per_req")),
               _f(med(runs, "rss_kb"), "{:.1f}", 1 / 1024)]
        row += [_f(med(runs, key), fmt) for _, key, fmt in extra]
        r = paired(base_runs, runs, "rps")
        row.append("-" if name == BASELINE or r is None else f"{r:.2f}x")
        if compiled_runs:
            rc = paired(compiled_runs, runs, "rps")
            row.append("-" if name == COMPILED or rc is None else f"{rc:.2f}x")
        rows.append(row)
    return _table(header, rows)


def _bar(path: Path, title: str, ylabel: str, names: list[str], values: list[list[float]], labels: dict[str, str],
         series: list[str] | None = None, target: tuple[float, str] | None = None, log: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    groups = values if series else [values]
    width = 0.8 / len(groups)
    for gi, group in enumerate(groups):
        xs, ys, lo, hi = [], [], [], []
        for i, vals in enumerate(group):
            if not vals:
                continue
            m = statistics.median(vals)
            xs.append(i + (gi - (len(groups) - 1) / 2) * width)
            ys.append(m)
            lo.append(m - min(vals))
            hi.append(max(vals) - m)
        colors = None if series else ["#d62728" if n == BASELINE else "#1f77b4" for n in names]
        if series:
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=series[gi])
        else:
            kept = [c for c, v in zip(colors, group, strict=True) if v]
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, color=kept)
    if target:
        ax.axhline(target[0], color="gray", linestyle="--", linewidth=1)
        ax.text(len(names) - 0.5, target[0], target[1], ha="right", va="bottom", fontsize=8, color="gray")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([labels.get(n, n) for n in names], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
    if series:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    labels: dict[str, str] = results.get("labels", {})
    sc = results.get("scenarios", {})
    lines = ["# WSGI+ benchmark results", "",
             "Generated by `bench/run.py` (see [../benchmarks.md](../benchmarks.md) for how to read it). ",
             f"Machine: {results.get('machine', '?')}. ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items()) + ".", "",
             "Server on core 0, load generator on core 1 (taskset). Medians of the runs with (min-max). "
             "**WSGI+ / this** is WSGI+'s figure divided by that server's in the same round (median over "
             "rounds; each round runs every server back to back). "
             "The machine is shared with other work: compare ratios, not absolute figures.", ""]
    checks: list[str] = []

    def meta(name: str) -> str:
        m = sc[name]["meta"]
        return (f"_{m['date']}, `{m['command']}`, WSGI+ at {m.get('wsgiplus_revision', '?')}, "
                f"{'quick' if m.get('quick') else 'full'} run, {m['seconds']} s._")

    if "hello" in sc:
        data = sc["hello"]["data"]
        lines += ["## hello: 13-byte response, keep-alive, 50 connections (wrk)", "", meta("hello"), ""]
        lines += _wrk_table(data, labels) + ["", "![hello](hello.png)", ""]
        names = list(data)
        _bar(out / "hello.png", "hello: requests/s (median, min-max), 50 keep-alive connections", "req/s",
             names, [_vals(data[n], "rps") for n in names], labels)
        base, peer = med(data.get(BASELINE, []), "rps"), med(data.get("waitress", []), "rps")
        r = paired(data.get(BASELINE, []), data.get("waitress", []), "rps")
        if base and peer and r:
            checks.append(f"| hello >= 3x waitress | {r:.2f}x (medians {base:,.0f} vs {peer:,.0f} req/s) | "
                          f"{'met' if r >= 3 else 'NOT met'} |")
    if "upstream" in sc:
        data = sc["upstream"]["data"]
        lines += ["## upstream fan-in: 500 clients, one loopback HTTP call of 100 ms each (limit 5,000 req/s)", "",
                  meta("upstream"), "",
                  "Peers call the upstream with a blocking `http.client` (gevent monkey-patches it); WSGI+ yields "
                  "a future from `wsgiplus.bridge` running an asyncio connection.", ""]
        lines += _wrk_table(data, labels) + ["", "![upstream](upstream.png)", ""]
        names = list(data)
        _bar(out / "upstream.png", "upstream fan-in: requests/s (limit 5,000)", "req/s", names,
             [_vals(data[n], "rps") for n in names], labels, target=(5000, "limit 500/0.1 s"))
        base, g = med(data.get(BASELINE, []), "rps"), med(data.get("granian", []), "rps")
        brss, grss = med(data.get(BASELINE, []), "rss_kb"), med(data.get("granian", []), "rss_kb")
        if base:
            checks.append(f"| upstream >= 4,500 req/s (8 threads) | {base:,.0f} req/s | "
                          f"{'met' if base >= 4500 else 'NOT met'} |")
        if base and g:
            checks.append(f"| upstream >= granian default | {base:,.0f} vs {g:,.0f} req/s | "
                          f"{'met' if base >= g else 'NOT met'} |")
        if brss and grss:
            checks.append(f"| upstream RSS < half granian's | {brss / 1024:.1f} vs {grss / 1024:.1f} MB | "
                          f"{'met' if brss < grss / 2 else 'NOT met'} |")
    if "idle" in sc:
        d = sc["idle"]["data"]
        runs, sizes = d["runs"], d["sizes"]
        lines += [f"## idle capacity: N requests at once, each waiting {d['wait_s']:.0f} s in the app", "",
                  meta("idle"), "",
                  f"The issue asks for 30 s waits; {d['wait_s']:.0f} s keeps the run short and is longer than the "
                  "time it takes to open every connection, so the count is the same. WSGI+ waits on a timer "
                  "future, the peers in `time.sleep`. *admitted* = most requests inside the app at once "
                  "(counted by the app); *RSS/admitted* = (peak RSS - RSS before) / admitted. One run per size.", ""]
        header = ["server"] + [h for n in sizes for h in (f"{n:,}: admitted", f"{n:,}: connected",
                                                          f"{n:,}: RSS growth MB", f"{n:,}: KB/admitted")]
        rows = []
        for name, per in runs.items():
            row = [labels.get(name, name)]
            for n in sizes:
                r = per.get(str(n), {})
                growth = (r["peak_rss_kb"] - r["base_rss_kb"]) / 1024 if "peak_rss_kb" in r else None
                row += [_f(r.get("admitted")), _f(r.get("connected")), _f(growth, "{:.1f}"),
                        _f(r.get("kb_per_admitted"), "{:.1f}")]
            rows.append(row)
        lines += _table(header, rows) + ["", "![idle](idle.png)", ""]
        names = list(runs)
        _bar(out / "idle.png", "idle capacity: requests admitted into the app at once (log scale)", "admitted",
             names, [[[runs[n].get(str(s), {}).get("admitted") or 0.9] for n in names] for s in sizes], labels,
             series=[f"{s:,} requests" for s in sizes], log=True)
        r = runs.get(BASELINE, {}).get("10000", {})
        if r:
            adm, kb = r.get("admitted", 0), r.get("kb_per_admitted")
            checks.append(f"| idle: all 10,000 admitted (8 threads) | {adm:,} admitted | "
                          f"{'met' if adm >= 10000 else 'NOT met'} |")
            if kb is not None:
                checks.append(f"| idle: <= 5 KB RSS per suspended request | {kb:.2f} KB | "
                              f"{'met' if kb <= 5 else 'NOT met'} |")
    if "stream" in sc:
        d = sc["stream"]["data"]
        runs = d["runs"]
        gb = d["bytes"] / (1 << 30)
        lines += [f"## streaming: {gb:g} GB in 64 KB chunks to one client", "", meta("stream"), "",
                  "nginx serves the same number of bytes from a file (sendfile) as the reference.", ""]
        base = med(runs.get(BASELINE, []), "mb_s")
        rows = []
        for name, rr in runs.items():
            cpu = med(rr, "cpu_s")
            rows.append([labels.get(name, name), span(rr, "mb_s"), _f(cpu / gb if cpu is not None else None, "{:.2f}"),
                         _f(med(rr, "rss_kb"), "{:.1f}", 1 / 1024),
                         str(all(r.get("complete") for r in rr)),
                         "-" if name == BASELINE else _ratio(base, med(rr, "mb_s"))])
        lines += _table(["server", "MB/s median (min-max)", "server CPU s/GB", "peak RSS MB", "complete",
                         "WSGI+ / this"], rows) + ["", "![stream](stream.png)", ""]
        names = list(runs)
        _bar(out / "stream.png", f"streaming {gb:g} GB to one client: MB/s", "MB/s", names,
             [_vals(runs[n], "mb_s") for n in names], labels)
        slow = d.get("slow_reader")
        if slow:
            lines += ["", "**Slow reader**: one client reading the same response at 2 MB/s; server RSS 1 s after "
                      "the start and at most afterwards. Flat means the server does not buffer what the client "
                      "has not read.", ""]
            lines += _table(["server", "RSS at 1 s MB", "peak RSS MB", "growth MB", "MB read"],
                            [[labels.get(n, n), _f(r.get("rss_1s_kb"), "{:.1f}", 1 / 1024),
                              _f(r.get("rss_peak_kb"), "{:.1f}", 1 / 1024), _f(r.get("growth_kb"), "{:.1f}", 1 / 1024),
                              _f(r.get("slow_bytes"), "{:.1f}", 1e-6)] for n, r in slow.items()])
            lines.append("")
            g = slow.get(BASELINE, {}).get("growth_kb")
            if g is not None:
                checks.append(f"| streaming: RSS flat with a slow reader | +{g / 1024:.1f} MB over the read | "
                              f"{'met' if g < 2048 else 'NOT met'} |")
        ng = med(runs.get("nginx", []), "mb_s")
        if base and ng:
            checks.append(f"| streaming within 2x nginx | {base:,.0f} vs {ng:,.0f} MB/s ({ng / base:.2f}x slower) | "
                          f"{'met' if base * 2 >= ng else 'NOT met'} |")
    if "sse" in sc:
        d = sc["sse"]["data"]
        runs = d["runs"]
        lines += [f"## SSE: 100 clients, one event every 100 ms ({d['events_per_client']} events each)", "",
                  meta("sse"), "",
                  "*events* = events received by all clients within the stream's duration (ideal "
                  f"{100 * d['events_per_client']:,}); a thread-per-request server serves only as many streams "
                  "as it has threads.", ""]
        rows = []
        for name, rr in runs.items():
            rows.append([labels.get(name, name), span(rr, "events"), _f(med(rr, "clients_served")),
                         _f(med(rr, "first_event_max_s"), "{:.2f}"), _f(med(rr, "cpu_s"), "{:.2f}"),
                         _f(med(rr, "rss_kb"), "{:.1f}", 1 / 1024)])
        lines += _table(["server", "events median (min-max)", "clients served", "slowest first event s",
                         "server CPU s", "peak RSS MB"], rows) + ["", "![sse](sse.png)", ""]
        names = list(runs)
        _bar(out / "sse.png", "SSE: events delivered to 100 clients", "events", names,
             [_vals(runs[n], "events") for n in names], labels,
             target=(100 * d["events_per_client"], "ideal"))
    if "slow" in sc:
        data = sc["slow"]["data"]
        lines += ["## slow clients: 200 clients send their request head 1 byte / 50 ms, 50 normal clients (wrk)", "",
                  meta("slow"), "",
                  "req/s is the normal clients'. *slow answered* = slow requests that got their response.", ""]
        lines += _wrk_table(data, labels, extra=[("slow answered", "slow_answered", "{:,.0f}")])
        lines += ["", "![slow](slow.png)", ""]
        names = list(data)
        _bar(out / "slow.png", "slow clients: normal clients' requests/s with 200 byte-by-byte senders", "req/s",
             names, [_vals(data[n], "rps") for n in names], labels)
    if "files" in sc:
        d = sc["files"]["data"]
        runs = d["runs"]
        mb = d["bytes"] / (1 << 20)
        lines += [f"## files: a {mb:g} MB file as Flask's send_file serves it (wsgi.file_wrapper), "
                  "4 connections (wrk)", "", meta("files"), "",
                  "Each server with and without sendfile; WSGI+ uses os.sendfile on plain TCP.", ""]
        rows = []
        for name, rr in runs.items():
            rows.append([labels.get(name, name), span(rr, "mb_s"), _f(med(rr, "cpu_s_per_gb"), "{:.2f}"),
                         _f(med(rr, "rss_kb"), "{:.1f}", 1 / 1024)])
        lines += _table(["server", "MB/s median (min-max)", "server CPU s/GB", "peak RSS MB"], rows) + [""]
        base, g = med(runs.get(BASELINE, []), "mb_s"), med(runs.get("gunicorn-gthread", []), "mb_s")
        if base and g:
            checks.append(f"| files: >= 0.8x gunicorn gthread's sendfile | {base:,.0f} vs {g:,.0f} MB/s "
                          f"({base / g:.2f}x) | {'met' if base >= 0.8 * g else 'NOT met'} |")
    if "h2" in sc and "hello" in sc["h2"]["data"]:
        h2 = sc["h2"]["data"]
        lines += ["## HTTP/2: 10 connections x 100 concurrent streams (h2load, h2c prior knowledge)", "",
                  meta("h2"), "",
                  "**hello** is the 13-byte response; **upstream** the fan-in (one loopback HTTP call of 100 ms "
                  "per request, so 1,000 streams in flight allow at most 10,000 req/s). Peers that serve WSGI "
                  "over HTTP/2: hypercorn (its executor threads) and granian.", ""]
        for part in ("hello", "upstream"):
            data = h2.get(part)
            if not data:
                continue
            base_runs = data.get(BASELINE, [])
            rows = []
            for name, runs in data.items():
                r = paired(base_runs, runs, "rps")
                rows.append([labels.get(name, name), span(runs, "rps"), _f(med(runs, "mean_ms"), "{:.1f}"),
                             _f(med(runs, "max_ms"), "{:.1f}"), _f(med(runs, "errors")),
                             _f(med(runs, "cpu_us_per_req")), _f(med(runs, "rss_kb"), "{:.1f}", 1 / 1024),
                             "-" if name == BASELINE or r is None else f"{r:.2f}x"])
            lines += [f"### h2 {part}", ""]
            lines += _table(["server", "req/s median (min-max)", "mean ms", "max ms", "errors", "CPU us/req",
                             "peak RSS MB", "WSGI+ / this"], rows) + [""]
    targets: list[str] = []
    if checks:
        targets = _table(["target", "measured (same run)", "status"], [c.strip("| ").split(" | ") for c in checks])
        lines += ["## Targets of issue 5", ""] + targets + [""]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    doc = out.parent / "benchmarks.md"
    if out.name == "benchmarks" and doc.exists():
        _update_summary(doc, results, labels, targets)


PEERS = ["wsgiplus", "waitress", "gunicorn-gthread", "gunicorn-gevent", "uvicorn-a2wsgi", "granian", "nginx"]
START, END = "<!-- results:start (bench/report.py rewrites this part) -->", "<!-- results:end -->"


def _update_summary(doc: Path, results: dict[str, Any], labels: dict[str, str], targets: list[str]) -> None:
    """Rewrite the generated part of docs/benchmarks.md: headline figures and the targets."""
    text = doc.read_text()
    if START not in text or END not in text:
        return
    sc = results.get("scenarios", {})
    dates = sorted({v["meta"]["date"] for v in sc.values()})
    revs = sorted({v["meta"].get("wsgiplus_revision", "?") for v in sc.values()})
    cmds = sorted({v["meta"]["command"] for v in sc.values()})
    rows = []

    def row(title: str, get: Any) -> None:
        rows.append([title] + [get(n) for n in PEERS])

    def wrk_get(name: str) -> Any:
        return lambda n: _f(med(sc[name]["data"].get(n, []), "rps")) if n in sc[name]["data"] else "-"

    if "hello" in sc:
        row("hello, req/s", wrk_get("hello"))
        row("hello, CPU us/req", lambda n: _f(med(sc["hello"]["data"].get(n, []), "cpu_us_per_req"))
            if n in sc["hello"]["data"] else "-")
    if "upstream" in sc:
        row("upstream fan-in, req/s (limit 5,000)", wrk_get("upstream"))
        row("upstream fan-in, peak RSS MB", lambda n: _f(med(sc["upstream"]["data"].get(n, []), "rss_kb"),
                                                          "{:.0f}", 1 / 1024) if n in sc["upstream"]["data"] else "-")
    if "idle" in sc:
        runs = sc["idle"]["data"]["runs"]
        row("idle: admitted of 10,000", lambda n: _f(runs.get(n, {}).get("10000", {}).get("admitted")))
    if "stream" in sc:
        sr = sc["stream"]["data"]["runs"]
        row("stream 1 GB, MB/s", lambda n: _f(med(sr.get(n, []), "mb_s")) if n in sr else "-")
    if "sse" in sc:
        er = sc["sse"]["data"]["runs"]
        row("SSE: events of 5,000", lambda n: _f(med(er.get(n, []), "events")) if n in er else "-")
    if "slow" in sc:
        row("slow clients: normal req/s", wrk_get("slow"))
    body = [START, "", f"## Latest results ({', '.join(dates)})", "",
            f"Machine: {results.get('machine', '?')}; WSGI+ at {', '.join(revs)}; command: "
            + ", ".join(f"`{c}`" for c in cmds) + ". Medians of 3 runs (1 for idle); full tables with "
            "ranges, latencies, CPU and memory: [benchmarks/results.md](benchmarks/results.md).", ""]
    body += _table(["scenario"] + [labels.get(n, n) for n in PEERS], rows)
    h2 = sc.get("h2", {}).get("data", {})
    if "hello" in h2:
        names = list(h2["hello"])
        h2_rows = []
        for part, title in (("hello", "h2 hello"), ("upstream", "h2 upstream fan-in (limit 10,000)")):
            data = h2.get(part, {})
            h2_rows.append([f"{title}, req/s"] + [_f(med(data.get(n, []), "rps")) if n in data else "-" for n in names])
            h2_rows.append([f"{title}, CPU us/req"] + [_f(med(data.get(n, []), "cpu_us_per_req")) if n in data else "-"
                                                        for n in names])
        body += ["", "HTTP/2 (h2load, 10 connections x 100 streams, h2c; "
                 f"{sc['h2']['meta']['date']}):", ""]
        body += _table(["scenario"] + [labels.get(n, n) for n in names], h2_rows)
    body += ["", "![hello](benchmarks/hello.png)", "![upstream](benchmarks/upstream.png)",
             "![idle](benchmarks/idle.png)", ""]
    if targets:
        body += ["### Targets of issue 5 (same run)", ""] + targets + [""]
    body.append(END)
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(head + "\n".join(body) + tail)
