"""`bigain demo` end to end on a tiny saved model: outputs, percent accuracy with intervals, stored speed."""

from __future__ import annotations

import json

import pytest


def test_demo_on_a_tiny_budget(tiny_folder, tmp_path):
    from bigain.demo import DEMO_METHODS, run_demo

    out = tmp_path / "demo"
    kw = {
        "images": 2,
        "gen_per_method": 2,
        "gen_steps": 2,
        "batch_size": 32,
        "progress": False,
        "speed_repeats": 1,
    }
    res = run_demo(str(out), str(tiny_folder), **kw)
    assert [r["setting"] for r in res["rows"]] == [label for label, _, _ in DEMO_METHODS]
    for f in ("demo.md", "demo.json", "speed.json", "speed_accuracy.png"):
        assert (out / f).is_file(), f
    for r in res["rows"]:
        assert (out / r["grid"]).is_file() and r["grid"].endswith("labelled_grid.png") and r["speedup"] > 0
        lo, hi = r["accuracy_ci95_pct"]
        assert r["n"] == 2 and 0 <= lo <= r["accuracy_pct"] <= hi <= 100  # percent, with its interval
    assert res["rows"][0]["speedup"] == 1.0
    md = (out / "demo.md").read_text()
    assert "95 % CI" in md and "| 2 |" in md
    stored = json.loads((out / "demo.json").read_text(), parse_constant=pytest.fail)
    assert stored["rows"][0]["accuracy_pct"] == res["rows"][0]["accuracy_pct"]

    # a rerun reuses the stored speed table as a whole; remeasure_speed times every setting again
    again = run_demo(str(out), str(tiny_folder), **kw)
    assert again["speed"]["measured_at"] == res["speed"]["measured_at"]
    assert [r["forward_s"] for r in again["rows"]] == [r["forward_s"] for r in res["rows"]]
    speed = json.loads((out / "speed.json").read_text())
    speed["measured_at"] = "earlier"
    (out / "speed.json").write_text(json.dumps(speed))
    redo = run_demo(str(out), str(tiny_folder), **kw, remeasure_speed=True)
    assert redo["speed"]["measured_at"] != "earlier"
