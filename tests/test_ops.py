"""Each operator against a plain, slow reference written here from the spec (loops over tokens)."""

from __future__ import annotations

import math

import pytest
import torch

from bigain import ops

# ---------------------------------------------------------------- references


def ref_laplacian(x: torch.Tensor, h: int, w: int, norm: str) -> torch.Tensor:
    b, n, c = x.shape
    out = torch.zeros(b, n, dtype=torch.float64)
    xd = x.double()

    def at(bi, i, j):
        if 0 <= i < h and 0 <= j < w:
            return xd[bi, i * w + j]
        return torch.zeros(c, dtype=torch.float64)

    for bi in range(b):
        for i in range(h):
            for j in range(w):
                lap = at(bi, i - 1, j) + at(bi, i + 1, j) + at(bi, i, j - 1) + at(bi, i, j + 1) - 4 * at(bi, i, j)
                out[bi, i * w + j] = lap.abs().sum() if norm == "l1" else lap.pow(2).sum().sqrt()
    return out


def ref_window_argmin(score: torch.Tensor, h: int, w: int, sx: int, sy: int) -> list[list[int]]:
    """Flat id of the lowest-score token in every window, per sample."""
    res = []
    for bi in range(score.shape[0]):
        ids = []
        for i in range(h // sy):
            for j in range(w // sx):
                cells = [((i * sy + dy) * w + j * sx + dx) for dy in range(sy) for dx in range(sx)]
                vals = [score[bi, c].item() for c in cells]
                ids.append(cells[vals.index(min(vals))])
        res.append(sorted(ids))
    return res


def ref_strip_rule(score: torch.Tensor, h: int, w: int, sx: int, sy: int) -> list[int]:
    """The official code's grouping (spec 3.2 pseudocode), one sample."""
    hsy, wsx = h // sy, w // sx
    ids = []
    for i in range(hsy):
        band = []
        for a in range(sy):
            band += [score[(i * sy + a) * w + col].item() for col in range(wsx * sx)]
        for j in range(wsx):
            strip = band[j * sy * sx : (j + 1) * sy * sx]
            k = strip.index(min(strip))
            ids.append((i * sy + k // sx) * w + j * sx + k % sx)
    return sorted(ids)


def ref_merge(x, metric, dst_ids, r):
    """Bipartite soft matching by loops: returns merged output per token after unmerge (copy)."""
    n = x.shape[0]
    dst_ids = list(dst_ids)
    src_ids = [i for i in range(n) if i not in set(dst_ids)]
    unit = metric / metric.norm(dim=-1, keepdim=True)
    best = {}
    for a in src_ids:
        sims = [float(unit[a] @ unit[d]) for d in dst_ids]
        m = max(sims)
        best[a] = (m, dst_ids[sims.index(m)])
    order = sorted(src_ids, key=lambda a: -best[a][0])
    merged = order[:r]
    groups = {d: [d] for d in dst_ids}
    for a in merged:
        groups[best[a][1]].append(a)
    dst_val = {d: torch.stack([x[i] for i in g]).mean(0) for d, g in groups.items()}
    reduced_len = n - r
    out = torch.empty_like(x)
    for i in range(n):
        if i in groups:
            out[i] = dst_val[i]
        elif i in merged:
            out[i] = dst_val[best[i][1]]
        else:
            out[i] = x[i]
    return out, reduced_len


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("hw", [(4, 4), (5, 3), (6, 7)])
def test_laplacian_matches_loops(norm, hw):
    h, w = hw
    x = torch.randn(2, h * w, 5)
    got = ops.laplacian_score(x, h, w, norm)
    torch.testing.assert_close(got.double(), ref_laplacian(x, h, w, norm), rtol=1e-5, atol=1e-5)


def test_laplacian_constant_field_zero_inside_nonzero_on_border():
    h = w = 6
    x = torch.ones(1, h * w, 3)
    s = ops.laplacian_score(x, h, w).view(h, w)
    assert torch.all(s[1:-1, 1:-1] == 0)
    assert torch.all(s[0] > 0) and torch.all(s[:, 0] > 0)


@pytest.mark.parametrize("hw,sxy", [((8, 8), (2, 2)), ((7, 9), (2, 2)), ((8, 12), (3, 2)), ((6, 6), (2, 3))])
def test_paper_rule_is_true_argmin_per_window(hw, sxy):
    h, w = hw
    sx, sy = sxy
    score = torch.randn(3, h * w)
    choice = ops.score_choice(score, h, w, sx, sy, rule="paper")
    dst, src = ops.partition(choice, h, w, sx, sy)
    expect = ref_window_argmin(score, h, w, sx, sy)
    for b in range(3):
        assert sorted(dst[b].tolist()) == expect[b]
        # exactly one destination per window, the rest (incl. leftovers) are sources
        assert len(set(dst[b].tolist()) | set(src[b].tolist())) == h * w
        assert dst.shape[1] == (h // sy) * (w // sx)


def test_reference_rule_reproduces_strip_grouping():
    h, w, sx, sy = 8, 8, 2, 2
    score = torch.randn(2, h * w)
    choice = ops.score_choice(score, h, w, sx, sy, rule="reference")
    dst, _ = ops.partition(choice, h, w, sx, sy)
    for b in range(2):
        assert sorted(dst[b].tolist()) == ref_strip_rule(score[b], h, w, sx, sy)


def test_reference_rule_hand_case():
    # 4x4 grid, scores 0..15 except a few: window (0,0) judged on row 0 cols 0-3 -> argmin col 0 -> (0,0)
    h = w = 4
    score = torch.arange(16.0).flip(0).unsqueeze(0)  # row 0: 15 14 13 12, row 1: 11 10 9 8
    choice = ops.score_choice(score, h, w, 2, 2, rule="reference")
    # window (0,0): strip = row0[0:4] = 15,14,13,12 -> k=3 -> (1,1) -> id 5
    # window (0,1): strip = row1[0:4] = 11,10,9,8 -> k=3 -> (1,3) -> id 7
    dst, _ = ops.partition(choice, h, w, 2, 2)
    assert sorted(dst[0].tolist()) == [5, 7, 13, 15]
    paper, _ = ops.partition(ops.score_choice(score, h, w, 2, 2, rule="paper"), h, w, 2, 2)
    assert sorted(paper[0].tolist()) == [5, 7, 13, 15]  # here the smallest of each window is bottom-right too


@pytest.mark.parametrize("r", [0, 1, 5, 11])
def test_bipartite_merge_matches_loop_reference(r):
    h = w = 4
    n, c = h * w, 6
    torch.manual_seed(r)
    x = torch.randn(2, n, c, dtype=torch.float64)
    metric = torch.randn(2, n, c, dtype=torch.float64)
    choice = ops.keyed_choice(torch.tensor([3, 4]), 9, h, w, 2, 2)
    dst, src = ops.partition(choice, h, w, 2, 2)
    plan = ops.bipartite_merge_plan(metric, dst, src, r)
    reduced = plan.reduce(x)
    assert reduced.shape == (2, n - r, c)
    out = plan.expand(reduced)
    for b in range(2):
        exp, length = ref_merge(x[b], metric[b], dst[b].tolist(), r)
        assert length == n - r
        torch.testing.assert_close(out[b], exp)


def test_merge_r_capped_at_sources_and_zero_is_identity():
    h = w = 4
    x = torch.randn(1, 16, 3)
    dst, src = ops.partition(ops.fixed_choice(h, w, 2, 2, x.device), h, w, 2, 2)
    plan = ops.bipartite_merge_plan(x, dst, src, 100)
    assert plan.reduce(x).shape[1] == 4  # 12 sources at most
    plan0 = ops.bipartite_merge_plan(x, dst, src, 0)
    assert torch.equal(plan0.expand(plan0.reduce(x)), x)


def ref_nearest_exact(x: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = x.shape
    oh, ow = h // s, w // s
    out = torch.empty(b, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            si = min(int(math.floor((i + 0.5) * h / oh)), h - 1)
            sj = min(int(math.floor((j + 0.5) * w / ow)), w - 1)
            out[:, :, i, j] = x[:, :, si, sj]
    return out


def ref_avg(x: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = x.shape
    out = torch.empty(b, c, h // s, w // s, dtype=x.dtype)
    for i in range(h // s):
        for j in range(w // s):
            out[:, :, i, j] = x[:, :, i * s : (i + 1) * s, j * s : (j + 1) * s].mean(dim=(-1, -2))
    return out


def test_nearest_exact_picks_offset_half_factor():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert ops.nearest_exact(x, 2).flatten().tolist() == [5, 7, 13, 15]


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0, 1.2, -0.3])
@pytest.mark.parametrize("hw", [(8, 8), (9, 7), (12, 6)])
def test_blend_matches_reference(s, alpha, hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    got = ops.blend_downsample(x, s, alpha)
    exp = alpha * ref_nearest_exact(x, s) + (1 - alpha) * ref_avg(x, s)
    torch.testing.assert_close(got, exp)


def test_blend_per_sample_alpha_and_linearity_through_projection():
    h = w = 8
    tokens = torch.randn(2, h * w, 6, dtype=torch.float64)
    alpha = torch.tensor([0.8, 1.2], dtype=torch.float64)
    kv = ops.downsample_tokens(tokens, h, w, 2, alpha)
    for b in range(2):
        single = ops.downsample_tokens(tokens[b : b + 1], h, w, 2, float(alpha[b]))
        torch.testing.assert_close(kv[b : b + 1], single)
    # weights sum to one, so downsampling commutes with an affine projection (to_k with bias)
    proj = torch.nn.Linear(6, 5).double()
    torch.testing.assert_close(proj(kv), ops.downsample_tokens(proj(tokens), h, w, 2, alpha))


def ref_sito(metric, h, w, r, noise, sx=2, sy=2, beta=1.0, noise_alpha=0.1):
    """SiTo by loops: returns (retained ids as a set, source id for each token)."""
    n = metric.shape[0]
    unit = metric.double() / metric.double().norm(dim=-1, keepdim=True)
    sim = unit @ unit.T
    score = [beta * sim[i].sum().item() + noise_alpha * noise[i].item() for i in range(n)]
    dst = []
    for i in range(h // sy):
        for j in range(w // sx):
            cells = [((i * sy + dy) * w + j * sx + dx) for dy in range(sy) for dx in range(sx)]
            vals = [score[c] for c in cells]
            dst.append(cells[vals.index(max(vals))])
    src = [i for i in range(n) if i not in set(dst)]
    red = {a: max(sim[a, d].item() for d in dst) for a in src}
    order = sorted(src, key=lambda a: -red[a])
    pruned = order[:r]
    kept = [i for i in range(n) if i not in set(pruned)]
    source = {}
    for i in range(n):
        if i in set(kept):
            source[i] = i
        else:
            vals = [sim[i, k].item() for k in kept]
            source[i] = kept[vals.index(max(vals))]
    return set(kept), source


@pytest.mark.parametrize("r", [0, 4, 10])
def test_sito_prune_and_recover_match_reference(r):
    h, w, c = 4, 6, 5
    n = h * w
    torch.manual_seed(100 + r)
    metric = torch.randn(1, n, c)
    noise = torch.randn(1, n)
    plan = ops.similarity_prune_plan(metric, h, w, r, noise=noise)
    kept, source = ref_sito(metric[0], h, w, r, noise[0])
    assert set(plan.keep_idx[0].tolist()) == kept
    x = torch.randn(1, n, 3)
    y = plan.expand(plan.reduce(x))
    for i in range(n):
        assert torch.equal(y[0, i], x[0, source[i]])


def test_keyed_random_is_a_function_of_key_only():
    a = ops.keyed_randint(torch.tensor([1, 2, 3]), 7, 50, 4)
    b = ops.keyed_randint(torch.tensor([3, 1]), 7, 50, 4)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    assert int(a.min()) >= 0 and int(a.max()) < 4
    counts = torch.bincount(ops.keyed_randint(torch.arange(200), 1, 100, 4).flatten(), minlength=4).float()
    assert (counts / counts.sum() - 0.25).abs().max() < 0.02
    z = ops.keyed_normal(torch.arange(100), 3, 200)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_infer_level_handles_odd_and_non_square():
    assert ops.infer_level(135, 240, 135 * 240) == 1
    assert ops.infer_level(135, 240, 68 * 120) == 2
    assert ops.infer_level(135, 240, 34 * 60) == 4
    with pytest.raises(ValueError):
        ops.infer_level(16, 16, 17)


@pytest.mark.parametrize("table_dtype", [torch.complex64, torch.complex128])
def test_rope_complex_is_the_diffusers_complex_rotation_bit_for_bit(table_dtype):
    # Qwen-Image's apply_rotary_emb_qwen (shared (S, D/2) rows) and Lumina2's / Z-Image's
    # apply_rotary_emb (per-sample (B, S, D/2) rows), use_real=False
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

    g = torch.Generator().manual_seed(0)
    angles = torch.rand(2, 12, 8, generator=g, dtype=torch.float64) * 6.3
    table = torch.polar(torch.ones_like(angles), angles).to(table_dtype)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 12, 3, 16, generator=g).to(dtype)
        shared = ops.rope_complex(x, table[0].real, table[0].imag)
        assert shared.dtype == dtype
        assert torch.equal(shared, apply_rotary_emb_qwen(x, table[0], use_real=False))
        assert torch.equal(ops.rope_complex(x, table.real, table.imag), apply_rotary_emb(x, table, use_real=False))
        # rows gathered per sample rotate each sample's tokens as the full table does
        pos = torch.stack([torch.randperm(12, generator=g) for _ in range(2)])
        xs = torch.stack([x[b, pos[b]] for b in range(2)])
        rows = torch.stack([table[0][pos[b]] for b in range(2)])
        assert torch.equal(ops.rope_complex(xs, rows.real, rows.imag), torch.stack([shared[b, pos[b]] for b in range(2)]))
