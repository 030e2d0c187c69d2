"""A model bigain does not know, described by a `BackboneSpec` in a few lines and registered: every
method compresses it and removal is bit-exact; the spec's fields are checked when it is made."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

import bigain
from bigain import backbones
from bigain.backbones import BACKBONES, BackboneSpec, SpecBackbone, Stack, coverage, register, unregister


class ToyBlock(nn.Module):
    def __init__(self, dim: int, text_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads=2, dim_head=dim // 2)
        self.text_attn = Attention(dim, cross_attention_dim=text_dim, heads=2, dim_head=dim // 2)
        self.mlp = FeedForward(dim, mult=2)

    def forward(self, x: torch.Tensor, text: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x) + temb[:, None])
        x = x + self.text_attn(self.norm2(x), encoder_hidden_states=text)
        return x + self.mlp(self.norm3(x))


class ToyDiT(nn.Module):
    """A small DiT that diffusers does not ship: patchify, four blocks, unpatchify."""

    def __init__(self, dim: int = 16, text_dim: int = 12, patch: int = 2, depth: int = 4) -> None:
        super().__init__()
        self.config = SimpleNamespace(patch_size=patch, sample_size=16)
        self.embed = nn.Conv2d(4, dim, patch, stride=patch)
        self.t_embed = nn.Linear(1, dim)
        self.layers = nn.ModuleList(ToyBlock(dim, text_dim) for _ in range(depth))
        self.out = nn.Linear(dim, 4 * patch * patch)

    def forward(self, latent: torch.Tensor, text: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, _, h, w = latent.shape
        p = self.config.patch_size
        x = self.embed(latent).flatten(2).transpose(1, 2)
        temb = self.t_embed(sigma.reshape(-1, 1).to(x.dtype))
        for layer in self.layers:
            x = layer(x, text, temb)
        x = self.out(x).reshape(b, h // p, w // p, 4, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, 4, h, w)


# What a user writes to teach bigain this model: ten lines.
TOY = BackboneSpec(
    name="toy-dit",
    classes=("ToyDiT",),
    stacks=(Stack("layers", {"attn": "self_attn", "cross": "text_attn", "ff": "mlp"}),),
    latent="latent",
    timestep="sigma",
    timestep_scale=1000.0,  # the model takes sigma in [0, 1]
    placement="relative",
)


def _inputs(h: int = 14, w: int = 10) -> tuple:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, h, w, generator=g), torch.randn(2, 3, 12, generator=g), torch.tensor([0.7, 0.4])


@pytest.fixture
def toy():
    adapter = register(TOY)
    try:
        torch.manual_seed(0)
        yield ToyDiT().eval(), adapter
    finally:
        unregister(adapter)


@pytest.mark.parametrize("method", coverage.compressing_methods())
def test_a_registered_spec_compresses_with_every_method_and_removes_exactly(toy, method):
    model, adapter = toy
    x, text, sigma = _inputs()  # a 7x5 token grid: odd and not square
    with torch.no_grad():
        base = model(x, text, sigma)
        report = bigain.apply(model, method)
        out = model(x, text=text, sigma=sigma)  # arguments by position or by name
        bigain.remove(model)
        after = model(x, text, sigma)
    assert report.model == "ToyDiT" and [b.name for b in report.blocks] == ["layers.1"]
    assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-6)
    assert torch.equal(after, base)


def test_the_spec_reads_grid_timesteps_and_roles(toy):
    model, adapter = toy
    assert backbones.find_backbone(model) is adapter and "ToyDiT" in backbones.SUPPORTED
    assert "ToyDiT" in bigain.patching.SUPPORTED  # read live, not a copy taken at import
    blocks = adapter.blocks(model)
    assert [sorted(b.roles) for b in blocks] == [["attn", "cross", "ff"]] * 4
    assert blocks[0].roles["attn"] is model.layers[0].self_attn and not blocks[0].joint
    x, text, sigma = _inputs()
    info = adapter.read_forward(model, (x, text), {"sigma": sigma}, {})
    assert (info.grid.height, info.grid.width) == (7, 5) and torch.allclose(info.timesteps, torch.tensor([700.0, 400.0]))
    info = adapter.read_forward(model, (x, text, 0.25), {}, {})
    assert info.host_timesteps == (250.0, 250.0)
    assert adapter.placement.startswith("the DiT-XL/2 placement mapped by relative depth")


def test_a_grid_function_where_the_latent_does_not_say_it(toy):
    model, _ = toy
    spec = BackboneSpec(
        name="toy-grid",
        classes=("ToyDiT",),
        stacks=(Stack("layers", {"attn": "self_attn"}),),
        latent="latent",
        timestep="sigma",
        grid=lambda m, inputs: (inputs["latent"].shape[-2] // 2, inputs["latent"].shape[-1] // 2),
        placement=(0, 2, 9),
    )
    adapter = SpecBackbone(spec)
    x, text, sigma = _inputs(10, 14)
    grid = adapter.read_forward(model, (x, text, sigma), {}, {}).grid
    assert (grid.frames, grid.height, grid.width) == (1, 5, 7)
    assert adapter.default_blocks(model, adapter.blocks(model)) == (0, 2)
    assert adapter.placement == "blocks 0, 2, 9"


def test_unregistered_models_are_refused_again(toy):
    model, adapter = toy
    unregister(adapter)
    try:
        assert "ToyDiT" not in backbones.SUPPORTED and "ToyDiT" not in bigain.patching.SUPPORTED
        with pytest.raises(TypeError, match="does not support ToyDiT"):
            bigain.apply(model, "tome")
    finally:
        BACKBONES.insert(0, adapter)  # the fixture takes it out


def test_registering_twice_and_unknown_names_fail_clearly(toy):
    with pytest.raises(ValueError, match="already registered"):
        register(TOY)
    with pytest.raises(ValueError, match="no registered adapter 'nope'"):
        unregister("nope")


def test_a_refusal_in_the_spec_reaches_apply(toy):
    model, _ = toy
    refusing = register(
        BackboneSpec(
            name="toy-no-kv",
            classes=("ToyDiT",),
            stacks=(Stack("layers", {"attn": "self_attn"}),),
            latent="latent",
            timestep="sigma",
            refuses={"kv": "its attention keeps no keys to downsample"},
        )
    )
    try:
        with pytest.raises(ValueError, match="keeps no keys"):
            bigain.apply(model, "todo")
    finally:
        unregister(refusing)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(stacks=(Stack("layers", {"attn": "a"}),), placement="all"), "placement='all'"),
        (dict(stacks=(Stack("layers", {"attn": "a"}),), default_metric="x"), "default_metric"),
        (dict(stacks=()), "at least one Stack"),
    ],
)
def test_spec_fields_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BackboneSpec(name="x", classes=("X",), **kwargs)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("layers", {"ff": "mlp"}), "must name the block's attention"),
        (("layers", {"attn": "a", "mlp": "mlp"}), "unknown roles"),
        (("layers", {"attn": "a"}, "suffix"), "text='suffix'"),
    ],
)
def test_stack_fields_are_checked(args, match):
    with pytest.raises(ValueError, match=match):
        Stack(*args)


def test_a_block_without_the_named_attention_is_a_clear_error(toy):
    model, _ = toy
    adapter = SpecBackbone(
        BackboneSpec(name="bad", classes=("ToyDiT",), stacks=(Stack("layers", {"attn": "attn1"}),))
    )
    with pytest.raises(TypeError, match="layers.0 has no attention at `attn1`"):
        adapter.blocks(model)
