#!/usr/bin/env python3
"""Renders the results of scripts/perf-report.sh: the PNG charts (gnuplot) beside the JSON
results, and the generated part of performance.md (between the perf-report markers).

Usage: perf-report.py --perf DIR --doc performance.md --threads N --mode full|quick
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile

BEGIN = "<!-- perf-report:begin -->"
END = "<!-- perf-report:end -->"


def load(perf, name):
    path = os.path.join(perf, name)
    with open(path) as f:
        return json.load(f)


def spread(values):
    v = sorted(values)
    return {"min": v[0], "median": v[len(v) // 2], "max": v[-1]} if v else None


def fmt(s, scale=1.0, digits=3):
    if s is None:
        return "n/a"
    return " / ".join(f"{s[k] * scale:.{digits}g}" for k in ("min", "median", "max"))


def ratios(num_runs, den_runs):
    return spread([a / b for a, b in zip(num_runs, den_runs)])


def goal_row(text, s, ok, digits=3):
    met = "n/a" if s is None else ("yes" if ok(s["median"]) else "**no**")
    return f"| {text} | {fmt(s, digits=digits)} | {met} |"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gnuplot(perf, name, script, data):
    """Writes the data blocks to a temporary directory and renders perf/NAME.png."""
    with tempfile.TemporaryDirectory() as tmp:
        for block, rows in data.items():
            with open(os.path.join(tmp, block + ".dat"), "w") as f:
                for r in rows:
                    f.write(" ".join(str(x) for x in r) + "\n")
        header = (
            f"set terminal pngcairo size 900,560 font 'sans,10'\n"
            f"set output '{os.path.join(perf, name + '.png')}'\n"
            "set grid\nset key top left\n"
        )
        subprocess.run(["gnuplot"], input=header + script, text=True, cwd=tmp, check=True)


def by_tokens(rows):
    return {r["tokens"]: r for r in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--perf", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--mode", default="full")
    a = ap.parse_args()
    perf, n = a.perf, a.threads
    one = load(perf, "engine-threads-1.json")
    many = load(perf, f"engine-threads-{n}.json")
    soft = load(perf, "prefill-softmax.json")
    ctx = load(perf, "decode-context.json")
    attn = load(perf, "attention.json")
    micro = load(perf, "micro.json")
    serving = load(perf, "serving.json")
    samples = load(perf, "serving-samples.json")
    # bench-engine measures the base of its predictions (4096 when present) first; keep each
    # batch's base context, then order the rows.
    ctx_base = {}
    for r in ctx["decode"]:
        ctx_base.setdefault(r["batch"], r)
    for e in (one, many, soft):
        e["prefill"].sort(key=lambda r: r["tokens"])
    for e in (one, many, ctx):
        e["decode"].sort(key=lambda r: (r["batch"], r["context"]))

    # --- goals ------------------------------------------------------------------------------
    attn_rows = by_tokens(attn["lengths"])
    goals = []
    r4k = attn_rows.get(4096)
    goals.append(goal_row("chunked linear attention >= 1.5x faster than recurrent at 4K",
                          r4k and r4k["chunked_speedup_vs_recurrent"], lambda x: x >= 1.5))
    r32k = attn_rows.get(32768)
    proj = " (softmax projected)" if r32k and r32k["softmax_projected"] else ""
    goals.append(goal_row("chunked >= 90x faster than softmax attention at 32K" + proj,
                          r32k and r32k["chunked_speedup_vs_softmax"], lambda x: x >= 90))
    worst = max(r["chunked_vs_recurrent_max_rel_diff"] for r in attn["lengths"])
    goals.append(f"| chunked and recurrent outputs agree within 1e-4 relative (worst length) "
                 f"| {worst:.2e} | {'yes' if worst <= 1e-4 else '**no**'} |")
    longest = max(r["context"] for r in ctx["decode"])
    for row in ctx["decode"]:
        if row["context"] == longest:
            base = ctx_base[row["batch"]]["context"]
            goals.append(goal_row(
                f"decode step at {longest} context (batch {row['batch']}) <= 1.1x the byte-count"
                f" prediction from {base}", row["cost_vs_byte_prediction"], lambda x: x <= 1.1))
    many_decode = {(r["batch"], r["context"]): r for r in many["decode"]}
    thread_decode = []
    for r in one["decode"]:
        m = many_decode.get((r["batch"], r["context"]))
        if m:
            s = ratios(r["runs_step_seconds"], m["runs_step_seconds"])
            thread_decode.append((r, m, s))
            goals.append(goal_row(f"decode batch {r['batch']}: {n} threads >= 1.7x one thread",
                                  s, lambda x: x >= 1.7))
    many_prefill = by_tokens(many["prefill"])
    thread_prefill = {}
    for r in one["prefill"]:
        m = many_prefill.get(r["tokens"])
        if m:
            s = ratios(r["runs_seconds"], m["runs_seconds"])
            thread_prefill[r["tokens"]] = s
            goals.append(goal_row(f"prefill {r['tokens']} tokens: {n} threads >= 1.6x one thread",
                                  s, lambda x: x >= 1.6))

    # --- tables -----------------------------------------------------------------------------
    soft_prefill = by_tokens(soft["prefill"])
    prefill_rows = []
    for r in many["prefill"]:
        t = r["tokens"]
        sp = soft_prefill.get(t)
        o = by_tokens(one["prefill"]).get(t)
        prefill_rows.append([
            t, fmt(o["seconds"]) if o else "-", fmt(r["seconds"]),
            fmt(thread_prefill.get(t)) if o else "-", f"{r['tokens_per_s']:.0f}",
            f"{r['gflops']:.1f}", f"{r['fraction_of_sgemm_peak']:.2f}",
            fmt(r["cost_vs_flop_prediction"]), fmt(sp["seconds"]) if sp else "-",
            fmt(ratios(sp["runs_seconds"], r["runs_seconds"])) if sp else "-"])
    decode_thread_rows = [[
        r["batch"], r["context"], fmt(r["step_seconds"], 1e3), fmt(m["step_seconds"], 1e3),
        fmt(s), f"{m['tokens_per_s']:.1f}", f"{m['fraction_of_bandwidth_roofline']:.2f}"]
        for r, m, s in thread_decode]
    ctx_rows = [[
        r["batch"], r["context"], fmt(r["step_seconds"], 1e3), f"{r['bytes_per_step'] / 1e6:.0f}",
        f"{r['roofline_seconds'] * 1e3:.1f}", f"{r['fraction_of_bandwidth_roofline']:.2f}",
        fmt(r["cost_vs_byte_prediction"])] for r in ctx["decode"]]
    attn_table = [[
        r["tokens"], fmt(r["chunked_seconds"]), fmt(r["recurrent_seconds"]),
        (fmt(r["softmax_seconds"]) + (" (projected)" if r["softmax_projected"] else "")),
        fmt(r["chunked_speedup_vs_recurrent"]),
        fmt(r["chunked_speedup_vs_softmax"]) + (" (projected)" if r["softmax_projected"] else ""),
        f"{r['chunked_vs_recurrent_max_rel_diff']:.2e}"] for r in attn["lengths"]]
    micro_rows = []
    for b in micro["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue
        flops = b.get("FLOP/s")
        bw = b.get("bytes/s")
        micro_rows.append([f"`{b['name']}`", f"{b['real_time']:.4g} {b['time_unit']}",
                           f"{flops / 1e9:.2f}" if flops else "-",
                           f"{bw / 1e9:.2f}" if bw else "-"])
    serve_rows = [[m, f"{serving[m]['p50']:.1f}", f"{serving[m]['p90']:.1f}",
                   f"{serving[m]['p99']:.1f}"] for m in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")]

    # --- charts -----------------------------------------------------------------------------
    def err_rows(rows, key_x, key_s, scale=1.0):
        return [(r[key_x], r[key_s]["median"] * scale, r[key_s]["min"] * scale,
                 r[key_s]["max"] * scale) for r in rows if r.get(key_s)]
    gnuplot(perf, "prefill", f"""
set title 'Prefill time vs prompt length ({n} threads; min-max bars)'
set xlabel 'prompt tokens'; set ylabel 'seconds'; set logscale xy 2
plot 'hybrid.dat' using 1:2:3:4 with yerrorlines title 'hybrid (linear + softmax)', \\
     'softmax.dat' using 1:2:3:4 with yerrorlines title 'all-softmax, same shape'
""", {"hybrid": err_rows(many["prefill"], "tokens", "seconds"),
      "softmax": err_rows(soft["prefill"], "tokens", "seconds")})
    ctx_data, plots = {}, []
    for batch in sorted({r["batch"] for r in ctx["decode"]}):
        rows = [r for r in ctx["decode"] if r["batch"] == batch]
        base = ctx_base[batch]
        ctx_data[f"b{batch}"] = err_rows(rows, "context", "step_seconds", 1e3)
        ctx_data[f"p{batch}"] = [(r["context"], base["step_seconds"]["median"] * 1e3 *
                                  r["bytes_per_step"] / base["bytes_per_step"]) for r in rows]
        plots.append(f"'b{batch}.dat' using 1:2:3:4 with yerrorlines title 'batch {batch}'")
        plots.append(f"'p{batch}.dat' using 1:2 with lines dashtype 2 title "
                     f"'batch {batch}: byte-count prediction from {base['context']}'")
    gnuplot(perf, "decode-context", f"""
set title 'Decode step time vs context ({n} threads; synthetic contexts)'
set xlabel 'context tokens'; set ylabel 'ms per step'; set logscale xy 2
plot {", ".join(plots)}
""", ctx_data)
    measured = [r for r in attn["lengths"] if not r["softmax_projected"]]
    projected = [r for r in attn["lengths"] if r["softmax_projected"]]
    if measured and projected:
        projected = [measured[-1]] + projected
    gnuplot(perf, "attention", f"""
set title 'One attention layer ({attn["heads"]} heads x {attn["head_dim"]}; {attn["threads"]} threads)'
set xlabel 'tokens'; set ylabel 'seconds'; set logscale xy 2
plot 'chunked.dat' using 1:2:3:4 with yerrorlines title 'chunked linear attention', \\
     'recurrent.dat' using 1:2:3:4 with yerrorlines title 'recurrent (decode kernel per token)', \\
     'softmax.dat' using 1:2:3:4 with yerrorlines title 'causal softmax attention', \\
     'projected.dat' using 1:2 with linespoints dashtype 2 title 'softmax, projected (n^2)'
""", {"chunked": err_rows(attn["lengths"], "tokens", "chunked_seconds"),
      "recurrent": err_rows(attn["lengths"], "tokens", "recurrent_seconds"),
      "softmax": err_rows(measured, "tokens", "softmax_seconds"),
      "projected": [(r["tokens"], r["softmax_seconds"]["median"]) for r in projected
                    if r.get("softmax_seconds")] or [(0, 0)]})
    for key, name, title in (("ttft_ms", "TTFT", "Time to first token"),
                             ("itl_ms", "ITL", "Inter-token latency")):
        v = sorted(samples[key])
        gnuplot(perf, "serving-" + name.lower(), f"""
set title '{title}: distribution over {len(v)} samples (CDF)'
set xlabel 'ms'; set ylabel 'fraction <= x'; set key bottom right; set yrange [0:1]
plot 'cdf.dat' using 1:2 with steps linewidth 2 title '{name}'
""", {"cdf": [(x, (i + 1) / len(v)) for i, x in enumerate(v)] or [(0, 0)]})

    # --- the document -----------------------------------------------------------------------
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""{BEGIN}
_Generated by `scripts/perf-report.sh` ({a.mode} run, {now}) on {cpu_model()},
{os.cpu_count()} cores; the engine runs {n} threads unless a column says otherwise. Ranges are
min / median / max of {many["repeat"]} runs; ratios are taken run by run. Limits measured in the
same runs: read bandwidth {many["read_bandwidth_gbs"]:.1f} GB/s and sgemm
{many["sgemm_gflops"]:.1f} GFLOP/s at {n} threads, {one["read_bandwidth_gbs"]:.1f} GB/s and
{one["sgemm_gflops"]:.1f} GFLOP/s at 1 thread._

### Goals

| goal | measured (min / median / max) | met |
| --- | --- | --- |
{chr(10).join(goals)}

### Prefill: hybrid vs all-softmax, 1 vs {n} threads

![prefill](perf/prefill.png)

{table(["tokens", "1 thread s", f"{n} threads s", "speedup", "tok/s", "GFLOP/s",
        "of sgemm peak", "cost / FLOP prediction", "all-softmax s", "all-softmax / hybrid"],
       prefill_rows)}

### Decode: 1 vs {n} threads

{table(["batch", "context", "1 thread ms", f"{n} threads ms", "speedup", "tok/s",
        "of bandwidth roofline"], decode_thread_rows)}

### Decode step vs context (synthetic contexts: the state and KV cache are filled directly)

![decode vs context](perf/decode-context.png)

{table(["batch", "context", "step ms", "MB read / step", "roofline ms", "of roofline",
        "cost / byte prediction from the first context"], ctx_rows)}

### One attention layer: chunked vs recurrent linear attention vs softmax

Softmax attention is measured up to {attn["softmax_max_length"]} tokens; longer lengths are
**projected** quadratically from the longest measured one.

![attention](perf/attention.png)

{table(["tokens", "chunked s", "recurrent s", "softmax s", "chunked speedup vs recurrent",
        "chunked speedup vs softmax", "max rel diff chunked vs recurrent"], attn_table)}

### Serving (`ringctl bench`, local cluster: router + 1 prefill + 1 decode)

{serving["succeeded"]} of {serving["requests"]} requests succeeded;
{serving["request_throughput"]:.2f} requests/s, {serving["output_token_throughput"]:.1f} output
tokens/s. The engine alone, timed in the same run: prefill {serving.get("engine_prefill_ms", 0):.0f}
ms, decode step {serving.get("engine_decode_step_ms", 0):.1f} ms; TTFT p50 / (engine prefill +
transfer) = {serving.get("ttft_p50_over_engine_prefill_plus_transfer", 0):.2f}, ITL p50 / engine
decode step = {serving.get("itl_p50_over_engine_decode_step", 0):.2f}.

![TTFT](perf/serving-ttft.png)
![ITL](perf/serving-itl.png)

{table(["metric", "p50", "p90", "p99"], serve_rows)}

### Kernel micro benchmarks (`ringserve-cpu-bench`, all cores)

{table(["benchmark", "time / iteration", "GFLOP/s", "GB/s"], micro_rows)}
{END}"""
    with open(a.doc) as f:
        doc = f.read()
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + body + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + body + "\n"
    with open(a.doc, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
