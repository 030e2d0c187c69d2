"""The fast-path kernels compile for an H100 (sm_90) with the installed Triton, without a GPU.

The interpreter tests (test_fast_ops.py) check what the kernels compute; this checks that Triton's
compiler accepts them for the GPU, with every dtype and specialisation the launchers use.
"""

import importlib.util
import os
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as exc:  # pragma: no cover - Triton's compiler API moved
    pytest.skip(f"Triton compiler API not found: {exc}", allow_module_level=True)

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bigain" / "ops" / "fast" / "triton_ops.py"
FLOAT_SCALARS = {"scale_h", "scale_w", "alpha"}
INDEX_POINTERS = {"src_ptr", "dst_ptr", "arg_ptr", "idx_ptr", "kept_ptr", "merged_ptr", "bounds_ptr"}


@pytest.fixture(scope="module")
def compiled_kernels():
    """triton_ops defined as compiled (not interpreted) kernels, whatever TRITON_INTERPRET says."""
    old = os.environ.pop("TRITON_INTERPRET", None)
    try:
        spec = importlib.util.spec_from_file_location("bigain_fast_kernels_for_compile", SOURCE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if old is not None:
            os.environ["TRITON_INTERPRET"] = old
    return module


def signature(kernel, dtype: str, constexprs: dict) -> dict:
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in INDEX_POINTERS:
            sig[name] = "*i64"
        elif name == "best_ptr":
            sig[name] = "*fp32"
        elif name.endswith("_ptr"):
            sig[name] = f"*{dtype}"
        elif name in FLOAT_SCALARS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_for_hopper(kernel, dtype: str, constexprs: dict, **pointer_types: str) -> None:
    sig = {**signature(kernel, dtype, constexprs), **pointer_types}
    triton.compile(ASTSource(kernel, sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 32))


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_kernels_compile_for_sm90(compiled_kernels, dtype):
    k = compiled_kernels
    compile_for_hopper(
        k._best_match_kernel, dtype, {"BLOCK_S": 64, "BLOCK_D": 64, "BLOCK_C": 64, "IEEE": dtype == "fp32"}
    )
    compile_for_hopper(k._gather_rows_kernel, dtype, {"BLOCK_M": 32, "BLOCK_C": 64})
    compile_for_hopper(k._segment_mean_kernel, dtype, {"BLOCK_M": 32, "BLOCK_C": 64})
    for mode, per_row in ((0, True), (0, False), (1, False), (2, False)):
        consts = {"S": 2, "MODE": mode, "ALPHA_PER_ROW": per_row, "BLOCK_T": 32, "BLOCK_C": 64}
        compile_for_hopper(
            k._kv_downsample_kernel, dtype, consts, alpha_ptr="*fp32" if per_row else f"*{dtype}"
        )
