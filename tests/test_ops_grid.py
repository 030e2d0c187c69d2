"""The grid (frames x height x width) operators against plain references written here (loops over
windows, frames and tokens), and, on one frame, bit for bit against the image operators as they were
before grids existed (the `legacy_*` copies below, frozen)."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bigain import ops
from bigain.ops import Grid

# ---------------------------------------------------------------- frozen image operators


def legacy_random_choice(height, width, sx, sy, generator, device):
    hsy, wsx = height // sy, width // sx
    gen_device = generator.device if generator is not None else device
    idx = torch.randint(sy * sx, size=(hsy, wsx, 1), device=gen_device, generator=generator)
    return idx.to(device).view(1, hsy, wsx)


def legacy_score_choice(score, height, width, sx, sy, rule="paper", largest=False):
    hsy, wsx = height // sy, width // sx
    b = score.shape[0]
    crop = score.view(b, height, width)[:, : hsy * sy, : wsx * sx]
    if rule == "paper":
        groups = crop.reshape(b, hsy, sy, wsx, sx).permute(0, 1, 3, 2, 4).reshape(b, hsy, wsx, sy * sx)
    else:
        groups = crop.reshape(b, hsy, wsx, sy * sx)
    return groups.argmax(dim=-1) if largest else groups.argmin(dim=-1)


def legacy_partition(choice, height, width, sx, sy):
    b, hsy, wsx = choice.shape
    marks = torch.zeros(b, hsy, wsx, sy * sx, dtype=torch.int64, device=choice.device)
    marks.scatter_(3, choice.unsqueeze(-1), -1)
    marks = marks.view(b, hsy, wsx, sy, sx).transpose(2, 3).reshape(b, hsy * sy, wsx * sx)
    if hsy * sy < height or wsx * sx < width:
        full = torch.zeros(b, height, width, dtype=torch.int64, device=choice.device)
        full[:, : hsy * sy, : wsx * sx] = marks
        marks = full
    order = marks.reshape(b, height * width, 1).argsort(dim=1).squeeze(-1)
    num_dst = hsy * wsx
    return order[:, :num_dst], order[:, num_dst:]


def legacy_laplacian_score(metric, height, width, norm="l1"):
    b, n, c = metric.shape
    x = metric.float().transpose(1, 2).reshape(b, c, height, width)
    kernel = x.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    lap = F.conv2d(x, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
    score = lap.abs().sum(dim=1) if norm == "l1" else lap.square().sum(dim=1).sqrt()
    return score.flatten(1)


def legacy_downsample_tokens(tokens, height, width, factor, alpha=1.0):
    if factor == 1:
        return tokens
    b, n, c = tokens.shape
    x = tokens.transpose(1, 2).reshape(b, c, height, width)
    size = (height // factor, width // factor)
    near = F.interpolate(x, size=size, mode="nearest-exact")
    avg = F.avg_pool2d(x, kernel_size=factor, stride=factor)
    if isinstance(alpha, float):
        if alpha == 1.0:
            out = near
        elif alpha == 0.0:
            out = avg
        else:
            out = near * alpha + avg * (1 - alpha)
    else:
        a = alpha.view(-1, 1, 1, 1)
        wd = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = (near * a.to(wd)).to(x.dtype) + (avg * (1 - a).to(wd)).to(x.dtype)
    return out.flatten(2).transpose(1, 2)


# ---------------------------------------------------------------- plain references


def flat(grid, t, y, x):
    return (t * grid.height + y) * grid.width + x


def window_cells(grid, window, a, i, j):
    """Flat ids of window (a, i, j) in window order k = (dt * sy + dy) * sx + dx."""
    st_, sy, sx = window
    return [
        flat(grid, a * st_ + dt, i * sy + dy, j * sx + dx)
        for dt in range(st_)
        for dy in range(sy)
        for dx in range(sx)
    ]


def all_windows(grid, window):
    st_, sy, sx = window
    for a in range(grid.frames // st_):
        for i in range(grid.height // sy):
            for j in range(grid.width // sx):
                yield a, i, j


def ref_dst_ids(choice_row, grid, window):
    return sorted(
        window_cells(grid, window, a, i, j)[int(choice_row[a, i, j])] for a, i, j in all_windows(grid, window)
    )


def ref_score_choice(score_row, grid, window, largest=False):
    out = torch.zeros(
        grid.frames // window[0], grid.height // window[1], grid.width // window[2], dtype=torch.int64
    )
    for a, i, j in all_windows(grid, window):
        vals = [score_row[c].item() for c in window_cells(grid, window, a, i, j)]
        out[a, i, j] = vals.index(max(vals) if largest else min(vals))
    return out


def ref_frequency(x, grid, norm, temporal):
    """6- (or 4-) neighbour Laplacian by loops, float64: zero padding in space, edges replicated in time."""
    b, n, c = x.shape
    t_, h, w = grid
    xd = x.double()
    out = torch.zeros(b, n, dtype=torch.float64)
    zero = torch.zeros(c, dtype=torch.float64)

    def at(bi, t, y, x_):
        return xd[bi, flat(grid, t, y, x_)] if 0 <= y < h and 0 <= x_ < w else zero

    for bi in range(b):
        for t in range(t_):
            for y in range(h):
                for x_ in range(w):
                    me = at(bi, t, y, x_)
                    lap = (
                        at(bi, t, y - 1, x_)
                        + at(bi, t, y + 1, x_)
                        + at(bi, t, y, x_ - 1)
                        + at(bi, t, y, x_ + 1)
                        - 4 * me
                    )
                    if temporal:
                        lap = lap + at(bi, max(t - 1, 0), y, x_) + at(bi, min(t + 1, t_ - 1), y, x_) - 2 * me
                    out[bi, flat(grid, t, y, x_)] = (
                        lap.abs().sum() if norm == "l1" else lap.pow(2).sum().sqrt()
                    )
    return out


def nearest_source(i, size_in, size_out):
    """torch's nearest-exact source index along one axis."""
    return min(math.floor((i + 0.5) * size_in / size_out), size_in - 1)


def ref_downsample(x, grid, s, ft, alpha):
    """alpha * nearest-exact + (1 - alpha) * mean of the ft x s x s block, by loops, float64; alpha per row."""
    b, n, c = x.shape
    t_, h, w = grid
    to, ho, wo = t_ // ft, h // s, w // s
    xd = x.double()
    out = torch.zeros(b, to * ho * wo, c, dtype=torch.float64)
    for bi in range(b):
        a = float(alpha[bi]) if isinstance(alpha, torch.Tensor) else alpha
        for t in range(to):
            for i in range(ho):
                for j in range(wo):
                    near = xd[
                        bi,
                        flat(
                            grid,
                            nearest_source(t, t_, to),
                            nearest_source(i, h, ho),
                            nearest_source(j, w, wo),
                        ),
                    ]
                    cells = [
                        flat(grid, t * ft + u, i * s + v, j * s + z)
                        for u in range(ft)
                        for v in range(s)
                        for z in range(s)
                    ]
                    avg = xd[bi, cells].mean(dim=0)
                    out[bi, (t * ho + i) * wo + j] = a * near + (1 - a) * avg
    return out


def ref_prune(metric, grid, window, r, noise=None, noise_alpha=0.1):
    """SiTo by loops (float64): kept ids and, for every token, the token whose output it receives."""
    unit = metric.double() / metric.double().norm(dim=-1, keepdim=True)
    n = unit.shape[0]

    def cos(i, j):
        return float(unit[i] @ unit[j])

    score = [sum(cos(i, j) for j in range(n)) for i in range(n)]
    if noise is not None:
        score = [s + noise_alpha * float(e) for s, e in zip(score, noise)]
    dst = []
    for a, i, j in all_windows(grid, window):
        cells = window_cells(grid, window, a, i, j)
        vals = [score[c] for c in cells]
        dst.append(cells[vals.index(max(vals))])
    src = [i for i in range(n) if i not in set(dst)]
    redundancy = {a: max(cos(a, d) for d in dst) for a in src}
    ranked = sorted(src, key=lambda a: -redundancy[a])
    r = min(r, len(src))
    pruned = ranked[:r]
    kept = ranked[r:] + dst
    source = {i: i for i in kept}
    for p in pruned:
        sims = [cos(p, k) for k in kept]
        source[p] = kept[sims.index(max(sims))]
    return sorted(kept), [source[i] for i in range(n)]


# ---------------------------------------------------------------- the grid value

GRIDS = [Grid(1, 6, 8), Grid(3, 4, 4), Grid(4, 5, 7), Grid(5, 6, 5)]
WINDOWS = [(1, 2, 2), (2, 2, 2), (1, 3, 2), (3, 2, 1)]


def test_grid_value():
    g = Grid(3, 4, 5)
    assert g.shape == tuple(g) == (3, 4, 5) and g.tokens == 60 and g.frame_tokens == 20
    t, h, w = g
    assert (t, h, w) == (3, 4, 5) and str(g) == "3x4x5"
    assert Grid.image(4, 5) == Grid(1, 4, 5) == Grid.of((4, 5)) and Grid.image(4, 5).is_image
    assert Grid.of((3, 4, 5)) == g and Grid.of(g) is g and hash(g) == hash(Grid(3, 4, 5))
    assert g.windows((2, 2, 2)) == Grid(1, 2, 2) and g.downsampled(2) == Grid(3, 2, 2)
    assert g.at_level(2) == Grid(3, 2, 3)
    for bad in [(0, 4, 4), (1, -1, 2), (1, 2.0, 2), (True, 2, 2)]:
        with pytest.raises(ValueError, match="positive integer"):
            Grid(*bad)
    with pytest.raises(ValueError, match="does not fit"):
        g.downsampled(2, frame_factor=4)
    with pytest.raises(ValueError, match="window"):
        ops.as_window((2, 2))
    with pytest.raises(AttributeError):
        g.frames = 2  # frozen


def test_tokens_volume_layout_is_frame_major():
    """(t, y, x) flattened t-major then row-major: a Conv3d patch embedding's flatten(2).transpose(1, 2)."""
    g = Grid(3, 4, 5)
    vol = torch.randn(2, 6, *g.shape)
    tokens = ops.volume_to_tokens(vol)
    assert tokens.shape == (2, g.tokens, 6)
    for t, y, x in [(0, 0, 0), (1, 2, 3), (2, 3, 4)]:
        assert torch.equal(tokens[:, flat(g, t, y, x)], vol[:, :, t, y, x])
    assert torch.equal(ops.tokens_to_volume(tokens, g), vol)
    rows = ops.frames_as_batch(tokens, g)
    assert torch.equal(rows[2 * 3 - 1], ops.map_to_tokens(vol[1:2, :, 2])[0])  # sample 1, frame 2


# ---------------------------------------------------------------- partitions


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("window", WINDOWS)
def test_partition_windows_match_loops(grid, window):
    if min(grid.frames // window[0], grid.height // window[1], grid.width // window[2]) == 0:
        pytest.skip("window larger than the grid")
    gen = torch.Generator().manual_seed(grid.tokens + sum(window))
    b = 3
    counts = (grid.frames // window[0], grid.height // window[1], grid.width // window[2])
    choice = torch.randint(math.prod(window), (b, *counts), generator=gen)
    dst, src = ops.partition_windows(choice, grid, window)
    assert dst.shape == (b, math.prod(counts)) and src.shape == (b, grid.tokens - math.prod(counts))
    for bi in range(b):
        expect = ref_dst_ids(choice[bi], grid, window)
        assert sorted(dst[bi].tolist()) == expect
        assert sorted(src[bi].tolist()) == sorted(set(range(grid.tokens)) - set(expect))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("largest", [False, True])
def test_score_windows_match_loops(grid, window, largest):
    if min(grid.frames // window[0], grid.height // window[1], grid.width // window[2]) == 0:
        pytest.skip("window larger than the grid")
    score = torch.randn(2, grid.tokens, generator=torch.Generator().manual_seed(grid.tokens))
    choice = ops.score_windows(score, grid, window, largest=largest)
    for bi in range(2):
        assert torch.equal(choice[bi], ref_score_choice(score[bi], grid, window, largest))


def test_reference_rule_is_the_image_rule_frame_by_frame():
    g, window = Grid(3, 6, 8), (1, 2, 2)
    score = torch.randn(2, g.tokens, generator=torch.Generator().manual_seed(0))
    choice = ops.score_windows(score, g, window, rule="reference")
    for t in range(3):
        frame = score[:, t * 48 : (t + 1) * 48]
        assert torch.equal(choice[:, t], legacy_score_choice(frame, 6, 8, 2, 2, rule="reference"))
    with pytest.raises(ValueError, match="st = 1"):
        ops.score_windows(score, g, (2, 2, 2), rule="reference")


@pytest.mark.parametrize(
    "hw,sxy", [((8, 8), (2, 2)), ((7, 9), (2, 2)), ((8, 12), (3, 2)), ((5, 6), (2, 3)), ((9, 4), (1, 2))]
)
def test_one_frame_is_the_image_partition_bit_for_bit(hw, sxy):
    """T = 1, st = 1: every index equals the pre-grid image operators', order included."""
    h, w = hw
    sx, sy = sxy
    g, window = Grid.image(h, w), (1, sy, sx)
    for seed in range(3):
        ref = legacy_random_choice(h, w, sx, sy, torch.Generator().manual_seed(seed), "cpu")
        got = ops.random_windows(g, window, torch.Generator().manual_seed(seed), "cpu")
        assert torch.equal(got.view_as(ref), ref)
        assert torch.equal(ops.random_choice(h, w, sx, sy, torch.Generator().manual_seed(seed), "cpu"), ref)
        ref_dst, ref_src = legacy_partition(ref, h, w, sx, sy)
        for dst, src in (ops.partition_windows(got, g, window), ops.partition(ref, h, w, sx, sy)):
            assert torch.equal(dst, ref_dst) and torch.equal(src, ref_src)
        score = torch.randn(3, h * w, generator=torch.Generator().manual_seed(seed))
        score[:, ::3] = 0.0  # ties: the first minimum must win in both
        for rule in ("paper", "reference"):
            for largest in (False, True):
                ref_c = legacy_score_choice(score, h, w, sx, sy, rule, largest)
                got_c = ops.score_windows(score, g, window, rule, largest)
                assert torch.equal(got_c.view_as(ref_c), ref_c)
                assert torch.equal(ops.score_choice(score, h, w, sx, sy, rule, largest), ref_c)
                ref_dst, ref_src = legacy_partition(ref_c, h, w, sx, sy)
                dst, src = ops.partition_windows(got_c, g, window)
                assert torch.equal(dst, ref_dst) and torch.equal(src, ref_src)
    keys = torch.tensor([3, 99, 2**40])
    table = ops.KeyedTable.for_keys(keys, 5, 2, 4)
    tc = table.window_choice(3, h, w, sx, sy)
    assert torch.equal(table.windows(3, g, window).view_as(tc), tc)
    assert torch.equal(tc, ops.keyed_choice(keys, ops.block_salt(5, 3), h, w, sx, sy))
    kc = ops.keyed_choice(keys, 7, h, w, sx, sy)
    assert torch.equal(ops.keyed_windows(keys, 7, g, window).view_as(kc), kc)
    hsy, wsx = h // sy, w // sx
    assert torch.equal(kc, ops.keyed_randint(keys, 7, hsy * wsx, sy * sx).view(-1, hsy, wsx))
    assert torch.equal(
        ops.fixed_windows(g, window, "cpu").view(1, hsy, wsx), ops.fixed_choice(h, w, sx, sy, "cpu")
    )


def test_random_and_keyed_windows_on_video():
    g, window = Grid(5, 6, 4), (2, 2, 2)
    got = ops.random_windows(g, window, torch.Generator().manual_seed(1), "cpu")
    assert got.shape == (1, 2, 3, 2)
    draw = torch.randint(
        8, (2, 3, 2, 1), generator=torch.Generator().manual_seed(1)
    )  # one stream, ToMe's shape
    assert torch.equal(got, draw.view(1, 2, 3, 2))
    table = ops.KeyedTable.for_timesteps(torch.tensor([999.0, 500.0]), 0, 0, 3)
    tw = table.windows(2, g, window)
    assert tw.shape == (2, 2, 3, 2) and int(tw.min()) >= 0 and int(tw.max()) < 8
    assert torch.equal(tw.flatten(1), table.bits(12)[:, 2, :12] % 8)
    keys = torch.tensor([5, 6, 7])
    k = ops.keyed_windows(keys, 3, g, window)
    assert k.shape == (3, 2, 3, 2) and int(k.min()) >= 0 and int(k.max()) < 8
    assert torch.equal(ops.keyed_windows(keys[1:2], 3, g, window), k[1:2])  # a row depends on its key alone
    assert len(set(k.flatten().tolist())) > 4
    fixed = ops.fixed_windows(g, window, "cpu")
    dst, _ = ops.partition_windows(fixed, g, window)
    assert sorted(dst[0].tolist()) == [
        flat(g, 2 * a, 2 * i, 2 * j) for a in range(2) for i in range(3) for j in range(2)
    ]


def test_within_frame_windows_give_every_frame_its_share():
    """The default window (1, 2, 2): each frame has (H//2)*(W//2) destinations, odd frame counts too."""
    g = Grid(5, 7, 6)
    assert ops.DEFAULT_WINDOW == (1, 2, 2)
    choice = ops.random_windows(g, ops.DEFAULT_WINDOW, torch.Generator().manual_seed(0), "cpu")
    dst, _ = ops.partition_windows(choice, g, ops.DEFAULT_WINDOW)
    frames = torch.bincount(dst[0] // g.frame_tokens, minlength=g.frames)
    assert frames.tolist() == [3 * 3] * 5
    dst2, _ = ops.partition_windows(torch.zeros(1, 2, 3, 3, dtype=torch.int64), g, (2, 2, 2))
    assert torch.bincount(dst2[0] // g.frame_tokens, minlength=5).tolist() == [
        9,
        0,
        9,
        0,
        0,
    ]  # last frame left over


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7)),
    window=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**31),
)
def test_partition_properties(shape, window, seed):
    g = Grid(*shape)
    counts = (g.frames // window[0], g.height // window[1], g.width // window[2])
    gen = torch.Generator().manual_seed(seed)
    choice = ops.random_windows(g, window, gen, "cpu")
    dst, src = ops.partition_windows(choice, g, window)
    assert dst.shape[1] == math.prod(counts)
    assert torch.equal(torch.cat([dst, src], 1).sort(1).values[0], torch.arange(g.tokens))
    dst_set = set(dst[0].tolist())
    for a, i, j in all_windows(g, window):  # one destination per window; the rest are sources
        assert len(dst_set & set(window_cells(g, window, a, i, j))) == 1


# ---------------------------------------------------------------- Laplacian


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("grid", [Grid(3, 4, 5), Grid(2, 3, 3), Grid(1, 4, 3)])
def test_frequency_score_matches_loops(norm, temporal, grid):
    x = torch.randn(2, grid.tokens, 4, generator=torch.Generator().manual_seed(grid.tokens))
    got = ops.frequency_score(x, grid, norm, temporal=temporal)
    assert got.shape == (2, grid.tokens) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref_frequency(x, grid, norm, temporal), rtol=1e-5, atol=1e-5)


def test_frequency_score_per_frame_and_one_frame_bit_for_bit():
    gen = torch.Generator().manual_seed(4)
    for h, w in [(6, 6), (5, 7), (8, 3)]:
        x = torch.randn(2, h * w, 5, generator=gen)
        ref = legacy_laplacian_score(x, h, w, "l1")
        for temporal in (False, True):  # on one frame the temporal stencil adds nothing
            assert torch.equal(ops.frequency_score(x, Grid.image(h, w), "l1", temporal), ref)
        assert torch.equal(ops.laplacian_score(x, h, w, "l2"), legacy_laplacian_score(x, h, w, "l2"))
        assert torch.equal(ops.laplacian_score(x.half(), h, w), legacy_laplacian_score(x.half(), h, w))
    g = Grid(4, 5, 6)
    x = torch.randn(2, g.tokens, 3, generator=gen)
    got = ops.frequency_score(x, g).view(2, 4, 30)
    for t in range(4):  # frame by frame, the image score of that frame
        assert torch.equal(got[:, t], legacy_laplacian_score(x[:, t * 30 : (t + 1) * 30], 5, 6))


def test_temporal_score_sees_motion():
    """A pattern constant in space moving in time: zero per-frame response inside, nonzero temporal."""
    g = Grid(3, 4, 4)
    x = torch.ones(1, g.tokens, 2)
    x[:, 16:32] = 3.0  # frame 1 differs from frames 0 and 2
    inner = [flat(g, t, y, x_) for t in range(3) for y in (1, 2) for x_ in (1, 2)]
    assert torch.all(ops.frequency_score(x, g)[0, inner] == 0)
    temporal = ops.frequency_score(x, g, temporal=True)[0, inner].view(3, 4)
    assert torch.all(temporal > 0)


def test_grid_ops_check_the_token_count():
    x = torch.randn(1, 30, 4)
    for call in (
        lambda: ops.frequency_score(x, Grid(2, 4, 4)),
        lambda: ops.downsample(x, Grid(2, 4, 4), 2),
        lambda: ops.prune_plan(x, Grid(2, 4, 4), 5),
    ):
        with pytest.raises(ValueError, match="do not form"):
            call()


# ---------------------------------------------------------------- KV downsampling

KV_CASES = [
    (Grid(4, 4, 6), 2, 2),
    (Grid(5, 6, 6), 2, 2),
    (Grid(3, 6, 9), 3, 1),
    (Grid(4, 5, 7), 2, 3),
    (Grid(6, 4, 4), 1, 2),
]


@pytest.mark.parametrize("grid,s,ft", KV_CASES)
def test_downsample_matches_loops(grid, s, ft):
    x = torch.randn(2, grid.tokens, 3, generator=torch.Generator().manual_seed(grid.tokens + s))
    out_grid = grid.downsampled(s, ft)
    for alpha in (1.0, 0.0, 0.7, 1.3, torch.tensor([0.25, 2.0], dtype=torch.float64)):
        got = ops.downsample(x, grid, s, alpha, frame_factor=ft)
        assert got.shape == (2, out_grid.tokens, 3)
        torch.testing.assert_close(got.double(), ref_downsample(x, grid, s, ft, alpha), rtol=1e-5, atol=1e-6)
    # nearest-exact copies tokens: exactly, and from the positions `downsample_positions` names
    near = ops.downsample(x, grid, s, 1.0, frame_factor=ft)
    assert torch.equal(near.double(), ref_downsample(x, grid, s, ft, 1.0).to(torch.float64))
    assert torch.equal(near, x[:, ops.downsample_positions(grid, s, ft)])


def test_nearest_is_offset_floor_half_on_divisible_grids():
    g = Grid(6, 6, 8)
    ids = ops.downsample_positions(g, 2, 3).view(2, 3, 4)
    expect = [
        [[flat(g, 3 * t + 1, 2 * i + 1, 2 * j + 1) for j in range(4)] for i in range(3)] for t in range(2)
    ]
    assert ids.tolist() == expect


@pytest.mark.parametrize("hw,s", [((8, 8), 2), ((7, 5), 2), ((9, 6), 3), ((5, 9), 4), ((6, 6), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_one_frame_downsample_bit_for_bit(hw, s, dtype):
    h, w = hw
    b = 2
    x = torch.randn(b, h * w, 6, generator=torch.Generator().manual_seed(h * w + s)).to(dtype)
    for alpha in (
        1.0,
        0.0,
        0.5,
        1.2,
        torch.tensor([0.25, 2.0], dtype=torch.float64),
        torch.tensor([0.9, 0.8]),
    ):
        ref = legacy_downsample_tokens(x, h, w, s, alpha)
        assert torch.equal(ops.downsample(x, Grid.image(h, w), s, alpha), ref)
        assert torch.equal(ops.downsample_tokens(x, h, w, s, alpha), ref)


def test_frame_factor_one_is_the_image_operator_per_frame():
    g = Grid(3, 6, 5)
    x = torch.randn(2, g.tokens, 4, generator=torch.Generator().manual_seed(9))
    alpha = torch.tensor([0.3, 1.6], dtype=torch.float64)
    got = ops.downsample(x, g, 2, alpha).view(2, 3, 6, 4)
    with_weights = ops.downsample(x, g, 2, alpha, weights=ops.blend_weights(alpha, x.dtype)).view(2, 3, 6, 4)
    for t in range(3):
        frame = x[:, t * 30 : (t + 1) * 30]
        ref = legacy_downsample_tokens(frame, 6, 5, 2, alpha)
        assert torch.equal(got[:, t], ref) and torch.equal(with_weights[:, t], ref)
    # the positions of the image form, frame by frame
    pos = ops.downsample_positions(g, 2)
    assert torch.equal(pos.view(3, -1), ops.nearest_positions(6, 5, 2, "cpu") + 30 * torch.arange(3)[:, None])


def test_video_maps_and_errors():
    x = torch.randn(2, 3, 5, 6, 4)
    avg = ops.average(x, 2, 2)
    assert avg.shape == (2, 3, 2, 3, 2)  # floor: the fifth frame is dropped
    torch.testing.assert_close(avg[:, :, 1, 2, 1], x[:, :, 2:4, 4:6, 2:4].mean(dim=(-3, -2, -1)))
    assert ops.nearest_exact(x, 2, 2).shape == (2, 3, 2, 3, 2)
    blended = ops.blend_downsample(x, 2, torch.tensor([0.5, 2.0]), frame_factor=2)
    torch.testing.assert_close(blended[1], 2.0 * ops.nearest_exact(x, 2, 2)[1] - avg[1])
    with pytest.raises(ValueError, match="video map"):
        ops.average(x[:, :, 0], 2, 2)
    tokens = torch.randn(1, Grid(1, 4, 4).tokens, 3)
    with pytest.raises(ValueError, match="does not fit"):
        ops.downsample(tokens, Grid(1, 4, 4), 2, frame_factor=2)  # one frame cannot lose half its frames
    assert ops.downsample(tokens, Grid(1, 4, 4), 1) is not None


# ---------------------------------------------------------------- SiTo


@pytest.mark.parametrize(
    "grid,window", [(Grid(3, 4, 4), (1, 2, 2)), (Grid(3, 5, 4), (2, 2, 2)), (Grid(2, 3, 6), (1, 3, 2))]
)
def test_prune_plan_matches_loops(grid, window):
    b, c = 2, 8
    gen = torch.Generator().manual_seed(grid.tokens)
    metric = torch.randn(b, grid.tokens, c, generator=gen, dtype=torch.float64)
    noise = torch.randn(b, grid.tokens, generator=gen, dtype=torch.float64)
    x = torch.randn(b, grid.tokens, 5, generator=gen, dtype=torch.float64)
    r = grid.tokens // 2
    plan = ops.prune_plan(metric, grid, r, window, noise=noise, similarity_dtype=torch.float64)
    out = plan.expand(plan.reduce(x))
    for bi in range(b):
        kept, source = ref_prune(metric[bi], grid, window, r, noise[bi])
        assert sorted(plan.keep_idx[bi].tolist()) == kept
        assert torch.equal(out[bi], x[bi, source])


def test_prune_plan_on_one_frame_is_the_image_plan():
    h, w = 6, 7
    gen = torch.Generator().manual_seed(2)
    metric = torch.randn(2, h * w, 8, generator=gen)
    noise = torch.randn(2, h * w, generator=gen)
    ref = ops.similarity_prune_plan(metric, h, w, 20, 2, 3, noise=noise)
    got = ops.prune_plan(metric, Grid.image(h, w), 20, (1, 3, 2), noise=noise)
    assert torch.equal(got.keep_idx, ref.keep_idx) and torch.equal(got.inverse, ref.inverse)
    # and its destinations are the legacy partition of the legacy window arg-max
    unit = metric / metric.norm(dim=-1, keepdim=True)
    score = (unit @ unit.transpose(-1, -2)).sum(-1) + 0.1 * noise
    dst, _ = legacy_partition(legacy_score_choice(score, h, w, 2, 3, largest=True), h, w, 2, 3)
    assert torch.equal(got.keep_idx[:, -dst.shape[1] :], dst)


def test_merge_plan_on_a_video_grid():
    """Bipartite merging takes flat ids: nothing in it assumes one frame."""
    g = Grid(3, 4, 6)
    gen = torch.Generator().manual_seed(8)
    metric = torch.randn(2, g.tokens, 8, generator=gen)
    dst, src = ops.partition_windows(ops.random_windows(g, (1, 2, 2), gen, "cpu"), g, (1, 2, 2))
    plan = ops.bipartite_merge_plan(metric, dst, src, 30)
    reduced = plan.reduce(metric)
    assert reduced.shape == (2, g.tokens - 30, 8)
    back = plan.expand(reduced)
    for bi in range(2):
        kept = plan.kept_idx[bi]
        assert torch.equal(back[bi, kept], metric[bi, kept])  # unmerged sources come back unchanged
        merged, dsts = plan.merged_idx[bi], plan.dst_idx.expand(2, -1)[bi]
        assert torch.equal(back[bi, merged], back[bi, dsts[plan.target[bi]]])  # merged ones copy their dst


# ---------------------------------------------------------------- Triton fast paths (CPU interpreter)


@pytest.fixture
def interpret():
    pytest.importorskip("triton")
    from bigain.ops import fast

    old_env, old_mode = os.environ.get("TRITON_INTERPRET"), fast.mode()
    fast.set_mode("interpret")
    yield fast
    fast.set_mode(old_mode)
    if old_env is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = old_env


def test_fast_paths_on_video_grids(interpret):
    fast = interpret
    g = Grid(3, 6, 5)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, g.tokens, 16, generator=gen)
    alpha = torch.tensor([0.5, 1.5])
    # frame_factor 1: the fused kernel, frames as batch rows
    with fast.using("off"):
        ref = ops.downsample(x, g, 2, alpha)
    torch.testing.assert_close(ops.downsample(x, g, 2, alpha), ref, atol=1e-6, rtol=1e-6)
    # frame_factor 2: no kernel for 3-D blocks; the reference runs, bit for bit
    with fast.using("off"):
        ref = ops.downsample(x, g, 2, alpha, frame_factor=2)
    assert torch.equal(ops.downsample(x, g, 2, alpha, frame_factor=2), ref)
    # plans: index kernels, any grid
    noise = torch.randn(2, g.tokens, generator=gen)
    with fast.using("off"):
        ref_plan = ops.prune_plan(x, g, 40, (1, 2, 2), noise=noise)
    got = ops.prune_plan(x, g, 40, (1, 2, 2), noise=noise)
    assert torch.equal(got.keep_idx, ref_plan.keep_idx) and torch.equal(got.inverse, ref_plan.inverse)
