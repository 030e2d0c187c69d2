"""The keyed hash keeps its values (run folders and pre-registered draws depend on them) and compiles."""

import ast
import importlib.util
import re

import pytest
import torch

from bigain.ops.keyed import keyed_bits

KEYS = torch.tensor([0, 1, 2**40 + 7, 2**62 + 12345], dtype=torch.int64)
# Values of the original formulation (element stride 0x9E3779B9), recorded before the int32-safe rewrite.
GOLDEN = [
    [2014971093, 2251148478, 1671851385, 680053404, 3403716689, 1995003487],
    [3153722454, 1798807924, 1460642616, 1069683260, 24467058, 495340569],
    [2339896169, 1397751229, 2062222279, 3047243557, 3169261529, 3127448066],
    [253812854, 132921112, 356115733, 2643672064, 3758069811, 4006406397],
]


def test_keyed_bits_values_are_pinned():
    assert keyed_bits(KEYS, 0x1234, 6).tolist() == GOLDEN


def test_keyed_bits_long_streams_match_the_exact_stride():
    # Far along the stream idx * stride exceeds 2**32: only its residue mod 2**32 may matter.
    assert keyed_bits(torch.tensor([5]), 99, 70000)[0, -3:].tolist() == [3054372809, 1371088851, 1327913774]
    from bigain.ops.keyed import _GOLDEN, _MASK32, hash32

    idx = torch.arange(70000, dtype=torch.int64)
    assert torch.equal((idx * _GOLDEN) & _MASK32, (idx * (_GOLDEN - (1 << 32))) & _MASK32)
    assert hash32(idx).max() <= _MASK32


def test_keyed_bits_compiles_to_the_same_values():
    compiled = torch.compile(lambda k: keyed_bits(k, 0x1234, 6), fullgraph=True)
    assert compiled(KEYS).tolist() == GOLDEN


def test_inductor_triton_code_for_the_keyed_hash_compiles_for_a_gpu(monkeypatch, tmp_path):
    """The Triton code Inductor writes for the keyed draws compiles for sm_90 (no GPU needed).

    On CUDA, `torch.compile` of the keyed hash once failed in Triton ("Scalar 2654435769 is out of
    range for type int32"). Here Inductor's Triton backend for CPU writes the same kernels, which are
    then compiled for an H100 target. Uses torch/Triton internals: skipped when they move.
    """
    triton = pytest.importorskip("triton")
    try:
        import torch._inductor.async_compile as async_compile
        import torch._inductor.config as inductor_config
        import torch.utils._triton as torch_triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as exc:
        pytest.skip(f"internals moved: {exc}")
    from bigain import ops

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from torch._inductor.runtime import triton_helpers

    if type(getattr(triton_helpers, "promote_to_tensor", None)).__name__ == "InterpretedFunction":
        pytest.skip("Inductor's Triton helpers were defined under TRITON_INTERPRET in this process")
    monkeypatch.setattr(inductor_config, "cpu_backend", "triton")
    monkeypatch.setattr(torch_triton, "triton_hash_with_backend", lambda: "0" * 64)
    sources: list[tuple[str, str]] = []
    monkeypatch.setattr(
        async_compile.AsyncCompile, "triton", lambda self, name, src, *a, **k: sources.append((name, src))
    )

    def draws(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = t[:1].to(torch.int64)
        choice = ops.keyed_choice(keys, 7, 16, 16, 2, 2)
        return ops.partition(choice, 16, 16, 2, 2)[0], ops.keyed_normal(keys.expand(2), 5, 256)

    torch._dynamo.reset()
    try:
        torch.compile(draws, fullgraph=True)(torch.tensor([500.0, 500.0]))
    except Exception:  # noqa: BLE001 - the captured kernels are not runnable here; only their code matters
        pass
    finally:
        torch._dynamo.reset()
    kernels = [(name, src) for name, src in sources if "bitwise_xor" in name]
    if not kernels:
        pytest.skip("Inductor wrote no Triton kernel for the hash on this torch")
    for i, (name, src) in enumerate(kernels):
        match = re.search(r"'signature': (\{[^}]*\})", src)
        assert match, name
        signature = ast.literal_eval(match.group(1))
        path = tmp_path / f"kernel_{i}.py"
        header = "import triton\nimport triton.language as tl\n"
        header += "from torch._inductor.runtime.triton_helpers import libdevice, math as tl_math\n"
        header += "from torch._inductor.runtime import triton_helpers\n"
        path.write_text(header + src[src.index("@triton.jit") :])
        spec = importlib.util.spec_from_file_location(f"bigain_keyed_kernel_{i}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        constexprs = {
            k: (1 if "per_" in name else 128) if k == "XBLOCK" else 64
            for k, v in signature.items()
            if v == "constexpr"
        }
        constexprs = {k: v for k, v in constexprs.items() if k in ("XBLOCK", "R0_BLOCK", "RBLOCK")}
        for k, v in signature.items():
            if v == "constexpr" and k not in constexprs:
                constexprs[k] = 1
        triton.compile(
            ASTSource(getattr(module, name), signature, constexprs=constexprs),
            target=GPUTarget("cuda", 90, 32),
        )
