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


def test_demo_report_defines_every_column_and_label_and_links_its_plot():
    from bigain.demo import DEMO_METHODS, _markdown

    speeds = {"none": 1.0, "tome-0.7": 1.3, "bigain-tm-0.7": 0.99, "todo-s2": 1.2, "bigain-td-s2": 1.1}
    rows = [
        {"setting": label, "method": method, "options": opts, "accuracy_pct": 80.0,
         "accuracy_ci95_pct": [50.0, 95.0], "n": 10, "speedup": speeds[label], "rows_per_s": 1000,
         "grid": f"generate/{label}/labelled_grid.png"}
        for label, method, opts in DEMO_METHODS
    ]  # fmt: skip
    key = {"batch": 125, "dtype": "fp32", "repeats": 5, "machine": "a test CPU"}
    text = _markdown({"images": 10, "model": "builtin:fashion-dit", "rows": rows,
                      "speed": {"key": key, "measured_at": "now"}})  # fmt: skip
    assert "](speed_accuracy.png)" in text
    assert "*denoiser rows/s* is how many rows" in text and "a row being" in " ".join(text.split())
    for label, _, _ in DEMO_METHODS:
        assert f"- `{label}`:" in text, label
    assert "- `tome-0.7`: ToMe" in text and "ratio=0.7" in text and "downsample_factor=2" in text
    why = [line for line in text.splitlines() if line.startswith("Why")]
    assert len(why) == 1 and why[0].startswith("Why `bigain-tm-0.7` is 0.99x here") and "a test CPU" in why[0]
