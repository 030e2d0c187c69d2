"""FLOPs per forward of the published video transformers, and the arithmetic ceiling of each method.

Models (built on the meta device from their published configs, no weights, no download; batch 1,
one denoiser forward, t = 500, text at the model's full length): Wan 2.1 T2V 1.3B and 14B at 480p
and 720p (81 frames), HunyuanVideo at 720p (129 frames), CogVideoX-5B at 49 x 480 x 720, LTX-Video
at 768 x 512 (121 frames). FLOPs are counted with FlopCounterMode (`bigain.bench.video.breakdown`:
attention as its two matmuls, linear layers as 2 m n k); what a compression leaves is arithmetic
on the counted shapes (`bigain.bench.video.flops_left`). Arithmetic, not timing.

Compressions, each at two placements ("all": every transformer block; "relative": the paper's
DiT-XL/2 blocks mapped by relative depth, block j of D when floor(28 j / D) is in {1..5, 7..11}):
- ceiling: the compressed attention sub-layers cost nothing;
- merge r0.5 (free merge): half the video tokens in those attentions, merging itself free;
- merge r0.5 + matching: the same plus ToMe's / BiGain-TM's bipartite matching matmul (2x2 windows);
- KV 2x2: keys/values pooled 2x2 in space (ToDo / BiGain-TD at factor 2);
- KV 2x2x2: keys/values pooled 2x2x2 in space and time.
Each row also gives the FLOPs counted with the real hooks where they run (the bounds, or a bigain
method through `bigain.apply`; "not supported yet" until the model has an adapter).

    python benchmarks/video_flops.py            # benchmarks/results/video-flops.{json,md}, ~2 min on a CPU
    python benchmarks/video_flops.py --tiny --out /tmp/vf   # tiny configs (a smoke run, seconds)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bigain.bench import build_model, machine_info  # noqa: E402
from bigain.bench.models import VIDEO_MODELS, VIDEO_SIZES, model_spec, video_grid, video_inputs  # noqa: E402
from bigain.bench.results import write_atomic, write_json  # noqa: E402
from bigain.bench.video import (  # noqa: E402
    PLACEMENTS,
    Compression,
    breakdown,
    flops_left,
    measured_flops,
    method_of,
    placement,
)

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "video-flops"
COMPRESSIONS = (
    ("ceiling", Compression("ceiling")),
    ("merge r0.5", Compression("merge", 0.5)),
    ("merge r0.5 + matching", Compression("merge", 0.5, matching=True)),
    ("kv 2x2", Compression("kv", pool=(1, 2, 2))),
    ("kv 2x2x2", Compression("kv", pool=(2, 2, 2))),
)
NAMES = {
    "ceiling": "ceiling: compressed attentions free",
    "merge r0.5": "merge r0.5, free merge (the ideal)",
    "merge r0.5 + matching": "merge r0.5 + bipartite matching (ToMe, BiGain-TM)",
    "kv 2x2": "KV 2x2 space (ToDo, BiGain-TD f2)",
    "kv 2x2x2": "KV 2x2x2 space-time",
}
MODEL_NAMES = {
    "wan2.1-1.3b": "Wan 2.1 T2V 1.3B",
    "wan2.1-14b": "Wan 2.1 T2V 14B",
    "hunyuan-video": "HunyuanVideo",
    "cogvideox-5b": "CogVideoX-5B",
    "ltx-video": "LTX-Video",
}
TINY_SIZE = {"ltx-video": (9, 128, 192)}  # 32x spatial VAE: a 2 x 4 x 6 latent
TINY_DEFAULT = (9, 64, 96)  # 3 x 8 x 12 latent, 3 x 4 x 6 tokens on the patch-2 models


def sizes_of(name: str, tiny: bool) -> dict[str, tuple[int, int, int]]:
    return {"tiny": TINY_SIZE.get(name, TINY_DEFAULT)} if tiny else VIDEO_SIZES[name]


def measure(model: torch.nn.Module, inputs: dict[str, Any], comp: Compression, blocks: str) -> dict[str, Any]:
    """The same compression counted with its real hooks: FLOPs, or why there is no count."""
    m = method_of(comp)
    if m is None:
        return {"method": None, "status": "no bigain setting yet"}
    out: dict[str, Any] = {"method": m[0], "options": m[1]}
    try:
        out["flops"] = measured_flops(model, inputs, comp, blocks)
        out["status"] = "counted"
    except TypeError as exc:  # bigain.apply does not know the model (no adapter yet)
        out["status"] = "not supported yet"
        out["detail"] = str(exc).splitlines()[0][:200]
    except Exception as exc:  # a hook that cannot run on this model: reported, not fatal
        out["status"] = "error"
        out["detail"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return out


def run_model(name: str, tiny: bool, check: bool) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    model = build_model(name, device="meta", tiny=tiny)
    spec = model_spec(name, tiny)
    params = sum(p.numel() for p in model.parameters())
    out = []
    for label, (frames, height, width) in sizes_of(name, tiny).items():
        grid = video_grid(name, frames, height, width, tiny=tiny)
        inputs = video_inputs(name, frames, height, width, device="meta", tiny=tiny)
        bd = breakdown(model, inputs)
        tokens = grid["tokens"]
        rec: dict[str, Any] = dict(
            model=name,
            size=label,
            frames=frames,
            height=height,
            width=width,
            params=params,
            blocks=bd.num_blocks,
            latent=list(grid["latent"]),
            token_grid=list(tokens),
            video_tokens=tokens[0] * tokens[1] * tokens[2],
            text_tokens=spec.text_tokens,
            flops=bd.total,
            attention_flops=bd.attention,
            attention_share=bd.attention_share,
            sites=len(bd.sites),
            site_core_matches_shapes=all(s.core == s.core_formula() for s in bd.sites),
            placements={},
        )
        for where in PLACEMENTS:
            chosen = placement(bd.num_blocks, where)
            p: dict[str, Any] = dict(
                blocks=list(chosen),
                sites_flops=bd.sites_flops(where),
                sites_share=bd.sites_flops(where) / bd.total,
                rows={},
            )
            for key, comp in COMPRESSIONS:
                left = flops_left(bd, tokens, comp, where)
                row: dict[str, Any] = dict(label=comp.label, flops=left, ceiling=bd.total / left)
                if check:
                    row["hooks"] = measure(model, inputs, comp, where)
                    if row["hooks"].get("flops") is not None:
                        row["hooks"]["matches"] = row["hooks"]["flops"] == left
                p["rows"][key] = row
            rec["placements"][where] = p
        rec["seconds"] = time.perf_counter() - t0
        out.append(rec)
        print(
            f"{name} {label}: {rec['video_tokens']} tokens, {bd.total / 1e12:.1f} TFLOPs, attention "
            f"{bd.attention_share:.0%}; ceilings (all) "
            + ", ".join(f"{k} {v['ceiling']:.2f}x" for k, v in rec["placements"]["all"]["rows"].items()),
            flush=True,
        )
        t0 = time.perf_counter()
    return out


def _pf(x: float) -> str:
    """FLOPs as TFLOPs (or GFLOPs/MFLOPs for tiny runs)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:,.1f} {unit}"
    return f"{x:,.0f}"


def _hooks_cell(row: dict[str, Any]) -> str:
    h = row.get("hooks")
    if h is None:
        return "–"
    if h["status"] == "counted":
        return f"{h['method']}: " + ("same" if h.get("matches") else f"{_pf(h['flops'])} (differs)")
    if h["status"] == "not supported yet":
        return f"{h['method']}: not supported yet"
    if h["status"] == "error":
        return f"{h['method']}: error"
    return h["status"]


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    recs = data["records"]
    lines = [
        "# FLOPs and arithmetic ceilings of token compression on video transformers",
        "",
        "Generated by `benchmarks/video_flops.py`. Every model is built on the meta device from its published",
        "config (no weights) and counted with `torch.utils.flop_counter.FlopCounterMode` over one denoiser",
        "forward: batch 1, t = 500, the text at the model's full length. Attention counts as its two matmuls",
        "(4 · heads · Nq · Nk · d), linear layers as 2 · m · n · k. **These are FLOP counts, not timings**: the",
        "ceilings below are what the arithmetic allows (FLOPs none / FLOPs left), which a GPU reaches only",
        "where the forward is compute-bound and attention runs near the matmul rate.",
        "",
        f"Machine (counting only): {m.get('cpu')}, torch {m.get('torch')}, diffusers {m.get('diffusers')}.",
        "",
    ]
    if data.get("tiny"):
        lines += ["**Tiny configs (a smoke run): these numbers say nothing about the published models.**", ""]
    lines += [
        "Compressed attentions: the self-attention of every chosen block (Wan 2.1, LTX-Video), the joint",
        "video-text attention (CogVideoX; HunyuanVideo's dual-stream and single-stream blocks, 20 + 40 in",
        "forward order). Cross-attention to text and the feed-forward are never compressed. Compressions:",
        "",
        "- ceiling: the compressed attention sub-layers (projections included) cost nothing;",
        "- merge r0.5 (free merge): their video tokens halved (queries, keys, values and output projection",
        "  on N/2 tokens, attention on (N/2 + text)² pairs), the merge itself free: the *ideal* of the GPU",
        "  benchmark;",
        "- merge r0.5 + matching: the same plus the bipartite matching's similarity matmul of ToMe and",
        "  BiGain-TM (one destination per 2×2 window of each frame: 2 · n_src · n_dst · C FLOPs);",
        "- KV 2×2: keys and values from the video tokens pooled 2×2 in space (ToDo and BiGain-TD at",
        "  factor 2); queries and the output keep every token;",
        "- KV 2×2×2: keys and values pooled 2×2×2 in space and time (frames floored to an even count).",
        "",
        "Placements: **all** = every transformer block; **relative** = the rule the project uses for image",
        "DiTs: block j of a depth-D model when floor(28 j / D) ∈ {1..5, 7..11} (the paper's DiT-XL/2 blocks",
        "mapped by relative depth).",
        "",
        "## Models, sizes and attention's share",
        "",
        "| model | size (frames × H × W) | params | blocks | video tokens (T × H × W) | text | TFLOPs / forward | attention matmuls | compressible, all | compressible, relative |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        g = r["token_grid"]
        pl = r["placements"]
        lines.append(
            f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['size']} ({r['frames']} × {r['height']} × {r['width']}) | "
            f"{r['params'] / 1e9:.2f} B | {r['blocks']} | {r['video_tokens']:,} ({g[0]} × {g[1]} × {g[2]}) | "
            f"{r['text_tokens']} | {_pf(r['flops'])} | {r['attention_share']:.1%} | "
            f"{pl['all']['sites_share']:.1%} | {pl['relative']['sites_share']:.1%} "
            f"({len(pl['relative']['blocks'])} of {r['blocks']} blocks) |"
        )
    lines += [
        "",
        "*attention matmuls*: QKᵀ and AV of every attention (compressed ones, cross-attention, text refiners)",
        "as a share of the forward; *compressible*: the compressed attention sub-layers (projections",
        "included) at that placement, which is what the ceiling removes.",
        "",
    ]
    for where in PLACEMENTS:
        title = "all blocks" if where == "all" else "the relative-depth placement"
        lines += [
            f"## Arithmetic ceilings at {title} (FLOPs none / FLOPs left)",
            "",
            "| model | size | " + " | ".join(NAMES[k] for k, _ in COMPRESSIONS) + " |",
            "|---|---|" + "---|" * len(COMPRESSIONS),
        ]
        for r in recs:
            rows = r["placements"][where]["rows"]
            lines.append(
                f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['size']} | "
                + " | ".join(f"{rows[k]['ceiling']:.2f}×" for k, _ in COMPRESSIONS)
                + " |"
            )
        lines.append("")
    lines += [
        "## FLOPs left per forward, and the same counted with the real hooks",
        "",
        "The hooks column counts the same forward with the code that does it: the benchmark's bounds",
        "(`ceiling`, `ideal`) or a bigain method through `bigain.apply` (`tome`, `todo`); *same* means the",
        "count equals the arithmetic to the FLOP. *not supported yet*: bigain has no adapter for the model",
        "yet, so its methods do not run on it; the arithmetic stands until they do.",
        "",
        "| model | size | placement | compression | TFLOPs left | ceiling | hooks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        for where in PLACEMENTS:
            nb = len(r["placements"][where]["blocks"])
            for k, _ in COMPRESSIONS:
                row = r["placements"][where]["rows"][k]
                lines.append(
                    f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['size']} | {where} ({nb} of {r['blocks']}) | "
                    f"{NAMES[k]} | {_pf(row['flops'])} | {row['ceiling']:.2f}× | {_hooks_cell(row)} |"
                )
    bad = [r for r in recs if not r["site_core_matches_shapes"]]
    lines += [
        "",
        "Check: the attention matmuls counted in every compressed attention equal 4 · heads · (N + text)² · d "
        "from its shapes"
        + (" (all models)." if not bad else f" — **not** for {', '.join(r['model'] for r in bad)}."),
        "",
        f"Run: {data['started']}, {data['seconds']:.0f} s, `{data['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(VIDEO_MODELS), choices=VIDEO_MODELS)
    p.add_argument("--tiny", action="store_true", help="tiny configs at a tiny size (smoke run)")
    p.add_argument("--no-hooks", action="store_true", help="skip counting with the real hooks")
    p.add_argument(
        "--out", default=None, help="results path without suffix (default benchmarks/results/video-flops)"
    )
    args = p.parse_args(argv)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    out = Path(args.out) if args.out else DEFAULT_OUT
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    records = []
    for name in args.models:
        records += run_model(name, args.tiny, not args.no_hooks)
    data = dict(
        started=started,
        seconds=time.perf_counter() - t0,
        command=" ".join(["python benchmarks/video_flops.py", *(argv if argv is not None else sys.argv[1:])]),
        machine=machine_info(),
        tiny=args.tiny,
        batch=1,
        note="FLOPs per denoiser forward, counted on the meta device: arithmetic, not timing",
        compressions={k: c.label for k, c in COMPRESSIONS},
        records=records,
    )
    write_json(out.with_suffix(".json"), data)
    write_atomic(out.with_suffix(".md"), render(data))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
