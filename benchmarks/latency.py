"""Latency of the compression methods on full-size SD 2 and DiT-XL/2 denoisers (random weights).

Every setting of one (model, size, dtype, batch) group is measured side by side in one process:
round-robin over the settings, `--repeats` rounds, medians. Settings: none; tome / bigain-tm / sito
and the peer tomesd at each ratio; todo / bigain-td at each factor; at the paper's placement
("paper": default options) and on every block ("all": blocks="all", tomesd max_downsample=8, or 2 on
DiT). Alongside: FLOPs of one forward (FlopCounterMode, explicit attention, counted on the meta
device), and the share of the baseline forward spent in the sub-layers each setting compresses,
timed with hooks during the baseline's own timed forwards; it bounds the speedup:
ceiling = 1 / (1 - share).

    python benchmarks/latency.py                      # default matrix (SD2 512 + DiT 256, fp32, batch 1)
    python benchmarks/latency.py --sizes sd2:768 --placements paper
    python benchmarks/latency.py --profile --sizes sd2:768 --ratios 0.5 --factors 2
    python benchmarks/latency.py --quick              # a 2-minute smoke run on DiT

Results are merged into benchmarks/results/latency.{json,md} (a group measured again replaces the
old one; --fresh starts over). The JSON is rewritten after every forward, so an interrupted run
leaves its data; the markdown is regenerated from the JSON.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bigain.bench import (  # noqa: E402
    SublayerTimer,
    build_model,
    compressed_sublayers,
    count_flops,
    example_inputs,
    machine_info,
    patched,
    time_once,
)
from bigain.bench.profile import PARTS, BlockProfiler  # noqa: E402
from bigain.bench.results import read_json, write_atomic, write_json  # noqa: E402
from bigain.bench.timing import quartiles  # noqa: E402
from bigain.patching import inspect_model  # noqa: E402
from bigain.precision import DTYPES  # noqa: E402

DEFAULT_SIZES = {"sd2": 512, "dit-xl2": 256}
MERGE_METHODS = ("tome", "bigain-tm", "sito", "tomesd")
KV_METHODS = ("todo", "bigain-td")
ALL_METHODS = ("none", "tome", "bigain-tm", "todo", "bigain-td", "sito", "tomesd")
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latency"
OUT = DEFAULT_OUT


# ---------------------------------------------------------------------------------------------
# settings


def make_settings(
    model_name: str, methods: list[str], ratios: list[float], factors: list[int], placements: list[str]
) -> list[dict[str, Any]]:
    """The settings of one group: method, placement, parameter, options."""
    out: list[dict[str, Any]] = []
    if "none" in methods:
        out.append(dict(key="none", method="none", placement="-", param=None, options={}))
    for placement in placements:
        for method in methods:
            if method == "none":
                continue
            params = ratios if method in MERGE_METHODS else factors
            for p in params:
                if method == "tomesd":
                    if model_name == "dit-xl2" and placement == "paper":
                        continue  # tomesd cannot select DiT's 10 paper blocks (it merges all or none)
                    md = (2 if model_name == "dit-xl2" else 8) if placement == "all" else 1
                    opts: dict[str, Any] = {"ratio": p, "max_downsample": md}
                elif method in MERGE_METHODS:
                    opts = {"ratio": p}
                else:
                    opts = {"downsample_factor": int(p)}
                if placement == "all" and method != "tomesd":
                    opts["blocks"] = "all"
                label = f"r={p}" if method in MERGE_METHODS else f"s={int(p)}"
                out.append(
                    dict(
                        key=f"{method}|{placement}|{label}",
                        method=method,
                        placement=placement,
                        param=label,
                        options=opts,
                    )
                )
    return out


BLOCK_ORDER = ("tome", "tomesd", "bigain-tm", "sito", "todo", "bigain-td")


def make_blocks(settings: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Comparison blocks: the settings sharing a placement and a parameter (e.g. tome, tomesd, bigain-tm
    and sito at r=0.5 on the paper's blocks), in a fixed method order. Each block runs right after a
    baseline forward, so settings compared with each other are measured next to each other."""
    blocks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for st in settings:
        if st["method"] != "none":
            blocks.setdefault((st["placement"], st["param"]), []).append(st)
    return [sorted(b, key=lambda st: BLOCK_ORDER.index(st["method"])) for b in blocks.values()]


def make_schedule(settings: list[dict[str, Any]], repeats: int) -> list[tuple[int, dict[str, Any]]]:
    """(round, setting) in run order. Every round visits the blocks (rotated by one per round, the order
    inside a block reversed every other round), each block preceded by a baseline forward; a final
    baseline closes the run. A setting's reference is then the mean of the two baselines around its
    block (slow drift cancels), and the settings of one block are compared run by run."""
    base = next(st for st in settings if st["method"] == "none")
    blocks = make_blocks(settings)
    schedule: list[tuple[int, dict[str, Any]]] = []
    for rnd in range(repeats):
        shift = rnd % max(1, len(blocks))
        for b in blocks[shift:] + blocks[:shift]:
            schedule.append((rnd, base))
            schedule.extend((rnd, st) for st in (b if rnd % 2 == 0 else b[::-1]))
    schedule.append((repeats - 1, base))
    return schedule


def group_key(g: dict[str, Any]) -> str:
    return f"{g['model']}|{g['pixels']}|{g['dtype']}|b{g['batch']}|{g['device']}"


# ---------------------------------------------------------------------------------------------
# results file


def load_results(fresh: bool) -> dict[str, Any]:
    data = None if fresh else read_json(OUT.with_suffix(".json"))
    if not isinstance(data, dict):
        return {"groups": {}, "profiles": {}}
    data.setdefault("groups", {})
    data.setdefault("profiles", {})
    return data


def save_results(data: dict[str, Any]) -> None:
    data["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(OUT.with_suffix(".json"), data)
    write_atomic(OUT.with_suffix(".md"), render_markdown(data))


# ---------------------------------------------------------------------------------------------
# measurement


def summarize(group: dict[str, Any]) -> None:
    """Medians, speedups vs none, ceilings, FLOP reductions and target checks, from the raw runs."""
    settings = group["settings"]
    base = settings.get("none")
    t_none = statistics.median(base["runs_s"]) if base and base["runs_s"] else None
    c_none = statistics.median(base["cpu_s"]) if base and base.get("cpu_s") else None
    shares_by_round = group.get("sublayer_s", [])
    f_none = group.get("flops", {}).get("none")
    for s in settings.values():
        runs = s["runs_s"]
        s["median_s"] = statistics.median(runs) if runs else None
        s["spread"] = (max(runs) - min(runs)) / s["median_s"] if len(runs) > 1 else None
        s["speedup_of_medians"] = t_none / s["median_s"] if (t_none and s["median_s"]) else None
        paired = s.get("paired") or []
        # speedup: median over runs of (mean of the two bracketing baselines) / (this run)
        s["speedup"] = statistics.median(paired) if paired else s["speedup_of_medians"]
        s["speedup_iqr"] = quartiles(paired)
        if s["method"] == "none":
            s["speedup"] = 1.0 if s["median_s"] else None
        cpu = s.get("cpu_s") or []
        s["cpu_median_s"] = statistics.median(cpu) if cpu else None
        s["cpu_speedup"] = c_none / s["cpu_median_s"] if (c_none and s["cpu_median_s"]) else None
        subs = s.get("sublayers") or []
        if subs and shares_by_round:
            shares = [sum(r["times"].get(n, 0.0) for n in subs) / r["forward_s"] for r in shares_by_round]
            s["share"] = statistics.median(shares)
            s["ceiling"] = 1.0 / (1.0 - s["share"])
            if s["speedup"] is not None and s["ceiling"] > 1:
                s["of_ceiling"] = (s["speedup"] - 1.0) / (s["ceiling"] - 1.0)
        fl = group.get("flops", {}).get(s["key"])
        s["flops"] = fl
        s["flops_reduction"] = (1.0 - fl / f_none) if (fl and f_none) else None
    group["targets"] = check_targets(group)


def run_ratios(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """time(a) / time(b) for each round in which both ran (side by side in one block)."""
    ra = dict(zip(a.get("rounds", []), a["runs_s"]))
    rb = dict(zip(b.get("rounds", []), b["runs_s"]))
    common = [r for r in ra if r in rb]
    if common:
        return [ra[r] / rb[r] for r in common]
    return [a["median_s"] / b["median_s"]]


def _target(
    name: str, setting: str, values: list[float], limit: float, below: bool, what: str
) -> dict[str, Any]:
    """A target check on the median of `values`; `clear` when the interquartile range agrees."""
    med = statistics.median(values)
    iqr = quartiles(values)
    met = med <= limit if below else med >= limit
    clear = iqr is None or (all(v <= limit for v in iqr) if below else all(v >= limit for v in iqr))
    clear = (
        clear
        if met
        else (iqr is None or (all(v > limit for v in iqr) if below else all(v < limit for v in iqr)))
    )
    spread = "" if iqr is None else f" (IQR {iqr[0]:.3f}–{iqr[1]:.3f} over {len(values)} runs)"
    return dict(
        target=name,
        setting=setting,
        value=med,
        iqr=iqr,
        met=met,
        clear=clear,
        detail=f"{what} = {med:.3f}{spread}",
    )


def check_targets(group: dict[str, Any]) -> list[dict[str, Any]]:
    st = group["settings"]
    out = []
    for key, s in st.items():
        if s["method"] != "tome" or s.get("median_s") is None:
            continue
        peer = st.get(key.replace("tome|", "tomesd|", 1))
        if peer and peer.get("median_s"):
            out.append(
                _target("tome no slower than tomesd", key, run_ratios(s, peer), 1.0, True, "tome/tomesd time")
            )
        ours = st.get(key.replace("tome|", "bigain-tm|", 1))
        if ours and ours.get("median_s"):
            out.append(
                _target(
                    "bigain-tm within 3% of tome",
                    ours["key"],
                    run_ratios(ours, s),
                    1.03,
                    True,
                    "bigain-tm/tome time",
                )
            )
    for key, s in st.items():
        if s["method"] == "none" or s.get("of_ceiling") is None:
            continue
        c = s["ceiling"] - 1.0
        fracs = [(p - 1.0) / c for p in s.get("paired") or [s["speedup"]]]
        t = _target("within 80% of ceiling", key, fracs, 0.8, False, "(speedup-1)/(ceiling-1)")
        t["detail"] += f"; speedup {s['speedup']:.3f}, ceiling {s['ceiling']:.3f}"
        out.append(t)
    return out


def sublayer_names(model: torch.nn.Module) -> list[str]:
    info = inspect_model(model)
    return [name for block in info.blocks for name in info.role_names(block).values()]


def run_group(
    data: dict[str, Any],
    model_name: str,
    pixels: int,
    dtype_name: str,
    batch: int,
    args: argparse.Namespace,
    meta_models: dict[str, torch.nn.Module],
) -> None:
    dtype = DTYPES[dtype_name]
    device = torch.device(args.device)
    settings = make_settings(model_name, args.methods, args.ratios, args.factors, args.placements)
    group = dict(
        model=model_name,
        pixels=pixels,
        latent=pixels // 8,
        dtype=dtype_name,
        batch=batch,
        device=str(device),
        threads=torch.get_num_threads(),
        repeats=args.repeats,
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        complete=False,
        loadavg=[list(os.getloadavg())],
        machine=machine_info(),
    )
    key = group_key(group)
    print(f"\n=== {key}: {len(settings)} settings x {args.repeats} rounds", flush=True)

    # FLOPs on the meta device (shapes only; same count as a real forward).
    meta = meta_models.get(model_name)
    if meta is None:
        meta = meta_models[model_name] = build_model(model_name, device="meta")
    meta_inputs = example_inputs(model_name, pixels, batch, device="meta")
    flops: dict[str, int] = {}
    if not args.no_flops:
        for s in settings:
            m = None if s["method"] == "none" else s["method"]
            flops[s["key"]] = count_flops(meta, meta_inputs, m, **s["options"])
        flops["none"] = flops.get("none") or count_flops(meta, meta_inputs)
    group["flops"] = flops
    # Sub-layers each setting compresses (read from the patch report on the meta model).
    for s in settings:
        m = None if s["method"] == "none" else s["method"]
        s["sublayers"] = compressed_sublayers(meta, m, **s["options"])
        s["runs_s"], s["cpu_s"] = [], []
    group["settings"] = {s["key"]: s for s in settings}
    group["sublayer_s"] = []
    data["groups"][key] = group

    model = build_model(model_name, device=device, dtype=dtype)
    inputs = example_inputs(model_name, pixels, batch, dtype=dtype, device=device)
    timed_names = sublayer_names(model)
    hook_share = device.type == "cpu"  # on CUDA the hooks' synchronisations would perturb the baseline

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        time_once(model, inputs)
    print(f"  warm-up forward {time.perf_counter() - t0:.1f}s", flush=True)
    schedule = make_schedule(settings, args.repeats)
    pending: list[tuple[dict[str, Any], int]] = []
    last_none: float | None = None
    n_total, t_start = len(schedule), time.perf_counter()
    for n_done, (rnd, st) in enumerate(schedule, 1):
        m = None if st["method"] == "none" else st["method"]
        with patched(model, m, **st["options"]):
            for _ in range(args.setting_warmup):
                time_once(model, inputs)
            if m is None and hook_share:
                with SublayerTimer(model, timed_names) as timer:
                    wall, cpu = time_once(model, inputs)
                group["sublayer_s"].append({"forward_s": wall, "times": dict(timer.times)})
            else:
                wall, cpu = time_once(model, inputs)
        st["runs_s"].append(wall)
        st["cpu_s"].append(cpu)
        st.setdefault("rounds", []).append(rnd)
        if m is None:
            for other, i in pending:
                ref = wall if last_none is None else 0.5 * (last_none + wall)
                other.setdefault("ref_s", []).append(ref)
                other.setdefault("paired", []).append(ref / other["runs_s"][i])
            pending, last_none = [], wall
        else:
            pending.append((st, len(st["runs_s"]) - 1))
        elapsed = time.perf_counter() - t_start
        eta = elapsed / n_done * (n_total - n_done)
        print(
            f"  [{n_done}/{n_total}] {st['key']:28s} {wall:8.2f}s (cpu {cpu:7.1f}s)  eta {eta / 60:5.1f} min",
            flush=True,
        )
        summarize(group)
        save_results(data)
        if n_done % 10 == 0:
            group["loadavg"].append(list(os.getloadavg()))
    if not hook_share:
        # On CUDA the timer's synchronisations would perturb the timed baselines: separate forwards.
        for _ in range(args.repeats):
            with SublayerTimer(model, timed_names) as timer:
                wall, _ = time_once(model, inputs)
            group["sublayer_s"].append({"forward_s": wall, "times": dict(timer.times)})
    group["complete"] = True
    group["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summarize(group)
    save_results(data)
    del model
    gc.collect()


def run_profile(
    data: dict[str, Any], model_name: str, pixels: int, dtype_name: str, batch: int, args: argparse.Namespace
) -> None:
    """Per-part times of the compressed blocks (BlockProfiler), interleaved rounds like the matrix."""
    dtype = DTYPES[dtype_name]
    device = torch.device(args.device)
    settings = make_settings(model_name, args.methods, args.ratios, args.factors, ["paper"])
    model = build_model(model_name, device=device, dtype=dtype)
    inputs = example_inputs(model_name, pixels, batch, dtype=dtype, device=device)
    ref = compressed_sublayers(model, "tome" if model_name == "sd2" else "todo")
    blocks = [n.rsplit(".", 1)[0] for n in ref]
    key = f"{model_name}|{pixels}|{dtype_name}|b{batch}|{device}"
    prof: dict[str, Any] = dict(
        model=model_name,
        pixels=pixels,
        dtype=dtype_name,
        batch=batch,
        device=str(device),
        threads=torch.get_num_threads(),
        blocks=blocks,
        machine=machine_info(),
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        repeats=args.repeats,
        settings={s["key"]: dict(forward_runs_s=[], parts_runs_s=[]) for s in settings},
    )
    data["profiles"][key] = prof
    print(f"\n=== profile {key}: blocks {blocks}", flush=True)
    time_once(model, inputs)  # warm-up
    for rnd in range(args.repeats):
        shift = (rnd * max(1, len(settings) // args.repeats + 1)) % len(settings)
        for s in settings[shift:] + settings[:shift]:
            m = None if s["method"] == "none" else s["method"]
            with patched(model, m, **s["options"]):
                for _ in range(args.setting_warmup):
                    time_once(model, inputs)
                with BlockProfiler(model, blocks, sync=device.type == "cuda") as bp:
                    wall, _ = time_once(model, inputs)
            tot = bp.totals()
            rec = prof["settings"][s["key"]]
            rec["forward_runs_s"].append(wall)
            rec["parts_runs_s"].append(tot)
            rec["forward_s"] = statistics.median(rec["forward_runs_s"])
            rec["parts_s"] = {p: statistics.median(r[p] for r in rec["parts_runs_s"]) for p in PARTS}
            print(
                f"  {s['key']:28s} forward {wall:7.2f}s  " + "  ".join(f"{p} {tot[p]:.2f}" for p in PARTS),
                flush=True,
            )
            save_results(data)
    prof["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save_results(data)
    del model
    gc.collect()


# ---------------------------------------------------------------------------------------------
# markdown


def _f(v: Any, fmt: str, dash: str = "–") -> str:
    return dash if v is None else format(v, fmt)


def _iqr(q: Any) -> str:
    return "" if not q else f" [{q[0]:.2f}–{q[1]:.2f}]"


def render_markdown(data: dict[str, Any]) -> str:
    lines = ["# Latency and FLOPs of the compression methods", ""]
    lines += [
        "Generated by `benchmarks/latency.py`. Random-weight SD 2.0-base U-Net and DiT-XL/2 built from their",
        "configs. Per group, all settings run interleaved in one process (round-robin, repeated); times are",
        "wall times of one denoiser forward. Each block of comparable settings (same placement and ratio or",
        "factor) runs right after a baseline forward; speedup = median over runs of (mean of the two baseline",
        "forwards around the run's block) / (the run), which cancels slow drift of the machine's speed;",
        "'speedup of medians' = median(none) / median(setting). Target ratios (tome/tomesd, bigain-tm/tome)",
        "are medians of run-by-run ratios within the same block. [a–b]: interquartile range of the per-run",
        "speedups; a target marked 'within noise' has an interquartile range that straddles its limit.",
        "share = fraction of the baseline forward spent in the sub-layers the setting compresses (timed by hooks",
        "during the baseline's own runs); ceiling = 1 / (1 - share); of-ceiling = (speedup - 1) / (ceiling - 1).",
        "GFLOPs: FlopCounterMode, batch as in the group, explicit-softmax attention (SDPA is not counted on CPU).",
        "spread = (max - min) / median of the runs (the JSON also has each forward's process CPU time).",
        "",
    ]
    for g in data.get("groups", {}).values():
        m = g.get("machine", {})
        lines.append(
            f"## {g['model']} {g['pixels']} px (latent {g['latent']}²), {g['dtype']}, batch {g['batch']}, {g['device']}"
        )
        lines.append("")
        la = g.get("loadavg", [])
        lines.append(
            f"Machine: {m.get('cpu')} ({m.get('cpu_count')} cores, flags {' '.join(m.get('cpu_flags', []))}), "
            f"torch {m.get('torch')}, {g.get('threads')} threads, diffusers {m.get('diffusers')}. "
            f"Started {g.get('started')}, {'finished ' + g['finished'] if g.get('complete') else 'INCOMPLETE (partial data)'}; "
            f"load average (1 min) during the run: {', '.join(f'{x[0]:.1f}' for x in la)}."
        )
        lines.append("")
        lines.append(
            "| setting | placement | median s | runs s | spread | speedup | speedup of medians | share | ceiling | of ceiling | GFLOPs | FLOPs −% |"
        )
        lines.append("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in g["settings"].values():
            name = s["method"] if s["param"] is None else f"{s['method']} {s['param']}"
            runs = ", ".join(f"{x:.2f}" for x in s["runs_s"])
            lines.append(
                f"| {name} | {s['placement']} | {_f(s.get('median_s'), '.2f')} | {runs} | {_f(s.get('spread'), '.0%')} | "
                f"{_f(s.get('speedup'), '.3f')}{_iqr(s.get('speedup_iqr'))} | {_f(s.get('speedup_of_medians'), '.3f')} | {_f(s.get('share'), '.1%')} | {_f(s.get('ceiling'), '.3f')} | "
                f"{_f(s.get('of_ceiling'), '.0%')} | {_f(None if s.get('flops') is None else s['flops'] / 1e9, '.1f')} | "
                f"{_f(None if s.get('flops_reduction') is None else 100 * s['flops_reduction'], '.1f')} |"
            )
        lines.append("")
        tg = g.get("targets", [])
        if tg:
            lines.append("Targets:")
            lines.append("")
            for t in tg:
                lines.append(
                    f"- {'MET' if t['met'] else 'NOT MET'}{'' if t.get('clear', True) else ' (within noise)'}: "
                    f"{t['target']} — {t['setting'].replace('|', ' ')}: "
                    f"{t['detail']}"
                )
            lines.append("")
    for p in data.get("profiles", {}).values():
        lines.append(
            f"## Profile: {p['model']} {p['pixels']} px, {p['dtype']}, batch {p['batch']}, {p['device']}"
        )
        lines.append("")
        lines.append(
            f"Medians of {p.get('repeats', 1)} interleaved forward(s) per setting, {p.get('threads', '?')} threads; "
            f"seconds summed over the {len(p['blocks'])} compressed blocks "
            f"({', '.join(p['blocks'])}). plan = block input to norm1 (merge plan on the block input); "
            "reduce = norm1 output to attn1's q projection (merge / prune / KV downsample; on DiT also the "
            "plan); attention = attn1 proper; expand = attn1 output to norm2 (unmerge, residual)."
        )
        lines.append("")
        lines.append(
            "| setting | forward s | "
            + " | ".join(PARTS)
            + " | overhead | attention saved | ideal speedup | block-model speedup |"
        )
        lines.append("|---|---:|" + "---:|" * len(PARTS) + "---:|---:|---:|---:|")
        base = p["settings"].get("none", {})
        for k, s in p["settings"].items():
            if "parts_s" not in s:
                continue
            t = s["parts_s"]
            over = saved = ideal = model = None
            if "parts_s" in base:
                b = base["parts_s"]
                over = sum(t[x] - b[x] for x in ("plan", "reduce", "expand"))
                saved = b["attention"] - t["attention"]
                fwd = base["forward_s"]
                ideal = fwd / (fwd - saved)
                model = fwd / (fwd - saved + over)
            lines.append(
                f"| {k.replace('|', ' ')} | {s['forward_s']:.2f} | "
                + " | ".join(f"{t[x]:.3f}" for x in PARTS)
                + f" | {_f(over, '.3f')} | {_f(saved, '.3f')} | {_f(ideal, '.3f')} | {_f(model, '.3f')} |"
            )
        lines.append("")
        lines.append(
            "overhead = (plan + reduce + expand) minus the baseline's; attention saved = baseline attn1 time minus "
            "the setting's; ideal speedup = F / (F - attention saved) with F the baseline forward (no overhead); "
            "block-model speedup = F / (F - attention saved + overhead), the speedup these in-situ part times "
            "predict (the rest of the network is unchanged by the patch)."
        )
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# main


def parse_sizes(items: list[str], models: list[str]) -> list[tuple[str, int]]:
    out = []
    for item in items:
        if ":" in item:
            m, px = item.split(":", 1)
            if m in models:
                out.append((m, int(px)))
        else:
            out.extend((m, int(item)) for m in models)
    seen = set()
    return [x for x in out if not (x in seen or seen.add(x))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["sd2", "dit-xl2"], choices=["sd2", "dit-xl2"])
    p.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="MODEL:PIXELS or PIXELS (all models); default sd2:512 dit-xl2:256",
    )
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=list(DTYPES))
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS))
    p.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.7])
    p.add_argument("--factors", nargs="+", type=int, default=[2, 4])
    p.add_argument("--placements", nargs="+", default=["paper", "all"], choices=["paper", "all"])
    p.add_argument(
        "--repeats", type=int, default=3, help="rounds over all settings (medians of this many runs)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed baseline forwards before the rounds")
    p.add_argument("--setting-warmup", type=int, default=0, help="untimed forwards per setting and round")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--profile", action="store_true", help="per-block time breakdown, one forward per setting")
    p.add_argument("--quick", action="store_true", help="smoke run: DiT 256, none/tome/tomesd/todo, 2 rounds")
    p.add_argument("--fresh", action="store_true", help="start a new results file instead of merging")
    p.add_argument("--render", action="store_true", help="only recompute summaries and rewrite the markdown")
    p.add_argument(
        "--out", default=str(DEFAULT_OUT), help="results path without suffix (.json and .md are written)"
    )
    args = p.parse_args(argv)
    global OUT
    OUT = Path(args.out)
    if args.quick:
        args.models, args.sizes = ["dit-xl2"], ["dit-xl2:256"]
        args.methods, args.ratios, args.factors = ["none", "tome", "tomesd", "todo"], [0.5], [2]
        args.placements, args.repeats = ["all"], 2
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = parse_sizes(args.sizes or [f"{m}:{DEFAULT_SIZES[m]}" for m in args.models], args.models)
    data = load_results(args.fresh)
    if args.render:
        for g in data["groups"].values():
            summarize(g)
        save_results(data)
        print(f"rewrote {OUT.with_suffix('.md')}")
        return 0
    data["machine"] = machine_info()
    data.setdefault("commands", []).append(" ".join(sys.argv))
    meta_models: dict[str, torch.nn.Module] = {}
    for model_name, pixels in sizes:
        for dtype_name in args.dtypes:
            for batch in args.batches:
                if args.profile:
                    run_profile(data, model_name, pixels, dtype_name, batch, args)
                else:
                    run_group(data, model_name, pixels, dtype_name, batch, args, meta_models)
    save_results(data)
    print(f"\nwrote {OUT.with_suffix('.json')} and {OUT.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
