"""The CPU sizing of one πRL update (lerobot_pirl.bench.cpu_sizing): its extrapolation and one measurement."""

from __future__ import annotations

import pytest

from lerobot_pirl.bench.cpu_sizing import extrapolate, load_rows, main, run_row, save_row, table


def _row(minibatch: int, peak: float, setting: str = "recipe") -> dict:
    return {
        "model": "pi0",
        "setting": setting,
        "minibatch": minibatch,
        "params": 3_300_000_000,
        "trainable": 300_000_000,
        "trainable_bytes": 600_000_000,
        "weights_gib": 6.2,
        "peak_gib": peak,
        "update_s": 60.0,
    }


def test_the_peak_is_extrapolated_along_the_per_sample_slope():
    slope, peak = extrapolate([_row(1, 10.0), _row(3, 11.0)], 129)
    assert slope == pytest.approx(0.5) and peak == pytest.approx(10.0 + 128 * 0.5)
    # More sizes: the least-squares line, so one point's allocator step moves the slope less than the two
    # endpoints alone would (these endpoints alone give 0.5 per sample, the line 0.4).
    points = [_row(1, 10.0), _row(2, 10.8), _row(4, 11.0), _row(8, 13.5)]
    slope, peak = extrapolate(points, 9)
    mean_m, mean_peak = 15 / 4, (10.0 + 10.8 + 11.0 + 13.5) / 4
    expected = sum((m - mean_m) * (p - mean_peak) for m, p in [(1, 10.0), (2, 10.8), (4, 11.0), (8, 13.5)])
    expected /= sum((m - mean_m) ** 2 for m in (1, 2, 4, 8))
    assert slope == pytest.approx(expected) and peak == pytest.approx(mean_peak + (9 - mean_m) * expected)
    assert slope < 0.5
    with pytest.raises(ValueError, match="two or more minibatch sizes"):
        extrapolate([_row(2, 10.0), _row(2, 10.5)], 64)


def test_the_table_gives_each_setting_its_peak_at_the_recipe_minibatch_and_per_ddp_rank():
    lines = table([_row(1, 10.0), _row(2, 10.5), _row(1, 8.0, "lora"), _row(2, 8.25, "lora")], 64, (2, 4))
    recipe, lora = lines.splitlines()[2:]
    cells = [c.strip() for c in recipe.split("|")[1:-1]]
    assert cells[:2] == ["pi0", "recipe"] and cells[2] == "3.30B (300M)"
    assert cells[6:] == [
        "0.500",
        f"{10.0 + 63 * 0.5:.1f}",
        f"{10.0 + 31 * 0.5:.1f}",
        f"{10.0 + 15 * 0.5:.1f}",
    ]
    assert lora.split("|")[2].strip() == "lora r16"
    alone = table([_row(1, 9.0, "lora")], 64, (2,)).splitlines()[2]  # one point: nothing to extrapolate
    assert [c.strip() for c in alone.split("|")[1:-1]][6:] == ["-", "-", "-"]


def test_one_measurement_runs_an_update_in_its_own_process_and_reads_its_peak():
    row = run_row("pi0", "recipe", 2, tiny=True)
    assert row["minibatch"] == 2 and 0 < row["trainable"] < row["params"]
    assert row["update_s"] > 0 and row["peak_gib"] > 0 and row["weights_gib"] >= 0


def test_measurements_accumulate_in_the_results_file_and_a_repeat_replaces_its_row(tmp_path):
    path = tmp_path / "sizing.json"
    save_row(path, _row(1, 10.0))
    save_row(path, _row(1, 8.0, "lora"))
    rows = save_row(path, _row(1, 9.5))  # the same model, setting and minibatch, measured again
    assert [(r["setting"], r["peak_gib"]) for r in rows] == [("lora", 8.0), ("recipe", 9.5)]
    assert load_rows(path) == rows and all(r["date"] and r["machine"] for r in rows)
    assert not list(tmp_path.glob("*.tmp"))


def test_the_table_is_printed_from_a_results_file_without_measuring(tmp_path, capsys):
    path = tmp_path / "sizing.json"
    save_row(path, _row(1, 10.0))
    save_row(path, _row(2, 10.5))
    main(["--results", str(path), "--table", "--recipe_minibatch", "3", "--ranks", "2"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert [c.strip() for c in line.split("|")[1:-1]][6:] == ["0.500", "11.0", "10.0"]


def test_a_results_file_of_another_shape_is_refused_with_its_name(tmp_path):
    path = tmp_path / "sizing.json"
    path.write_text('{"tasks": []}')
    with pytest.raises(ValueError, match=r"sizing\.json"):
        load_rows(path)
