"""Method options are type- and range-checked when the config is built (ValueError naming option,
value and the allowed range), so a bad value never reaches a forward or a run folder."""

from __future__ import annotations

import math

import pytest

import bigain
from bigain.methods import parse_option_value

BAD = [
    ("tome", "use_rand", "maybe"),
    ("tome", "use_rand", 2),
    ("tome", "merge_attn", None),
    ("bigain-tm", "merge_mlp", "sometimes"),
    ("sito", "merge_crossattn", 0.5),
    ("tome", "seed", 2**70),
    ("tome", "seed", 2**63),
    ("tome", "seed", -1),
    ("tome", "seed", 1.0),
    ("tome", "seed", True),
    ("todo", "stop_t", "x"),
    ("todo", "stop_t", math.inf),
    ("sito", "noise_alpha", "abc"),
    ("sito", "noise_alpha", math.nan),
    ("sito", "beta", math.nan),
    ("bigain-td", "alpha", math.nan),
    ("bigain-td", "alpha", -math.inf),
    ("bigain-td", "alpha_schedule", (0.8, math.inf)),
    ("bigain-td", "alpha_schedule", (math.nan, 1.2)),
    ("tome", "ratio", math.nan),
    ("tome", "ratio", 1.5),
]


@pytest.mark.parametrize(("method", "key", "value"), BAD)
def test_bad_values_are_rejected_naming_option_value_and_range(method, key, value):
    with pytest.raises(ValueError) as e:
        bigain.make_config(method, **{key: value})
    msg = str(e.value)
    assert f"{key}=" in msg and "expected" in msg, msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("no", False), ("off", False), ("on", True), ("1", True), ("0", False), ("Yes", True)],
)
def test_clear_boolean_spellings_are_accepted_as_booleans(text, expected):
    for value in (text, parse_option_value(text)):  # as typed by a user, and as the CLI parses it
        cfg = bigain.make_config("tome", use_rand=value, merge_mlp=value)
        assert cfg.use_rand is expected and cfg.merge_mlp is expected


def test_edge_values_that_are_valid_pass():
    assert bigain.make_config("tome", seed=2**63 - 1).seed == 2**63 - 1
    assert bigain.make_config("tome", seed=0, merge_attn=False).merge_attn is False
    assert bigain.make_config("bigain-td", alpha=1.2, alpha_schedule=[0.8, 1.2]).alpha_schedule == (0.8, 1.2)
    assert bigain.make_config("todo", stop_t=None).stop_t is None


def test_cli_rejects_bad_options_in_one_line(capsys, tmp_path):
    from bigain.cli import main

    out = tmp_path / "run"
    for opt in ("use_rand=maybe", "seed=1180591620717411303424", "merge_attn=2"):
        assert main(["classify", "--method", "tome", "--option", opt, "--limit", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and opt.split("=")[0] in err and "Traceback" not in err
    assert main(["classify", "--method", "bigain-td", "--option", "alpha=nan", "--out", str(out)]) == 2
    assert "alpha=nan" in capsys.readouterr().err
    assert not out.exists()
