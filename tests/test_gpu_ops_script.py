"""benchmarks/gpu_ops.py runs end to end in its CPU dry run, so a GPU session only has to run it."""

import importlib.util
import json
from pathlib import Path

from bigain.ops import fast

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_ops.py"


def test_gpu_ops_smoke_writes_its_report(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_ops_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old = fast.mode()
    try:
        data = module.main(["--smoke", "--no-compile", "--rounds", "1", "--out", str(tmp_path / "ops")])
    finally:
        fast.set_mode(old)
    saved = json.loads((tmp_path / "ops.json").read_text())
    operators = {row["operator"] for row in saved["results"]}
    assert operators == {"merge_plan", "merge_reduce", "merge_expand", "kv_todo", "kv_blend", "sito_plan"}
    assert all(row["times"]["reference"]["median"] > 0 for row in saved["results"])
    assert len(data["results"]) == len(saved["results"])
    assert "| smoke-odd | 1 | merge_reduce |" in (tmp_path / "ops.md").read_text()
