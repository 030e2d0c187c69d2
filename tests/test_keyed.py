"""The keyed hash keeps its values (run folders and pre-registered draws depend on them) and compiles."""

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
