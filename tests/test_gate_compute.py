"""scripts/reproduce/gate_compute.py: the fits behind the compute each quality gate needs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce" / "gate_compute.py"
FIELDS = ["version", "crops_256", "kodak_human_vtm", "kodak_machine_vtm", "coco_yolox_avif"]
FIELDS += ["coco_fastestdet_avif", "fit"]


@pytest.fixture(scope="module")
def gate_compute():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("gate_compute", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gate_compute"] = module
    spec.loader.exec_module(module)
    return module


def rows(curve, crops=(1e5, 2e5, 4e5, 8e5, 16e5)) -> list[dict[str, str]]:
    table = [
        {"version": f"v{i}", "crops_256": str(c), "kodak_human_vtm": str(curve(c)), "fit": "yes"}
        for i, c in enumerate(crops)
    ]
    table[0]["fit"] = "no"  # left out of the fits
    table[0]["kodak_human_vtm"] = "999"
    for row in table:
        row.update(kodak_machine_vtm="150", coco_yolox_avif="", coco_fastestdet_avif="40")
    return table


def test_the_log_fit_and_its_extrapolation(gate_compute) -> None:
    a, b = gate_compute.fit(rows(lambda c: 300 - 20 * math.log(c)))
    assert a == pytest.approx(300) and b == pytest.approx(20)
    gates = gate_compute.extrapolate(a, b, seen=1e3, cpu_crops_per_s=2.0)
    must = gates["must (beat WebP)"]
    assert must["crops_256"] == pytest.approx(math.exp((300 - 85) / 20))
    assert must["missing_crops_256"] == pytest.approx(must["crops_256"] - 1e3)
    assert must["cpu_hours"] == pytest.approx(must["missing_crops_256"] / 2.0 / 3600)
    assert must["h100_minutes"] == pytest.approx(must["missing_crops_256"] / (13.5 * 64 * 60))
    reached = gate_compute.extrapolate(a, b, seen=1e12, cpu_crops_per_s=2.0)
    assert reached["must (beat WebP)"]["cpu_hours"] == 0


def test_the_levelling_fit_finds_the_floor(gate_compute) -> None:
    floor = gate_compute.fit_floor(rows(lambda c: 120 + 1e9 * c**-1.5))
    assert floor["floor"] == pytest.approx(120, abs=0.5)
    assert floor["alpha"] == pytest.approx(1.5, abs=0.02)
    assert floor["residual"] < floor["log_fit_residual"]


def test_main_writes_the_plot_and_the_numbers(gate_compute, tmp_path, monkeypatch) -> None:
    table = tmp_path / "versions.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows(lambda c: 250 - 15 * math.log(c)))
    argv = ["gate_compute.py", "--table", str(table), "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    gate_compute.main()
    result = json.loads((tmp_path / "out" / "gate-compute.json").read_text())
    assert result["fit"]["b"] == pytest.approx(15)
    assert (tmp_path / "out" / "quality-vs-crops.png").stat().st_size > 10_000
