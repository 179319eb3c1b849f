"""benchmarks/__init__.py: the machine line's peaks come from the CPU's flags."""

import os

import pytest

import benchmarks

EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2450.000\nflags\t\t: fpu sse2 avx fma avx2\n"
XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\ncpu MHz\t\t: 2000.000\n"
        "flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")


@pytest.mark.parametrize("cpuinfo, units, fp32_per_cycle, bf16_per_cycle", [
    (EPYC, "AVX2", 32, 32), (XEON, "AVX-512, AVX512-BF16, AMX-BF16", 64, 1024)])
def test_peaks_follow_the_flags(tmp_path, cpuinfo, units, fp32_per_cycle, bf16_per_cycle):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    flags = benchmarks.cpu_flags(tmp_path / "cpuinfo")
    cycles = (os.cpu_count() or 1) * benchmarks.cpu_ghz() * 1e9
    assert benchmarks.vector_units(flags) == units
    assert benchmarks.cpu_peak_flops(flags) == pytest.approx(cycles * fp32_per_cycle)
    assert benchmarks.cpu_peak_bf16_flops(flags) == pytest.approx(cycles * bf16_per_cycle)


def test_avx512_bf16_without_amx_doubles_the_fp32_peak_and_unknown_cpus_count_sse():
    assert benchmarks.cpu_peak_bf16_flops(frozenset({"avx512f", "avx512_bf16"})) == pytest.approx(
        2 * benchmarks.cpu_peak_flops(frozenset({"avx512f"})))
    assert benchmarks.vector_units(frozenset()) == "SSE"
    assert benchmarks.cpu_flags("/nonexistent/cpuinfo") == frozenset()


def test_machine_line_names_the_units_and_peaks():
    line = benchmarks.machine_line()
    assert benchmarks.vector_units() in line and "GFLOP/s fp32" in line and "load average" in line


def test_loss_subsets_time_a_round_of_b_of_the_k_models():
    from benchmarks import loss

    (text,) = loss.main(["--landscape", "3", "--portrait", "2", "--models", "3", "--subsets", "3,1", "--repeat", "1"])
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "models" not in line]
    assert [int(r[0]) for r in rows] == [3, 1]
    assert all(float(r[2]) > 0 and float(r[1]) >= float(r[2]) for r in rows)  # the first call compiles


def test_bundled_costs_take_the_names_in_turn_and_the_median_of_the_process_medians(monkeypatch, tmp_path):
    import json

    from benchmarks import inference

    calls = []
    per_call = {"a": [[0.30, 0.10, 0.20], [0.50, 0.40, 0.45], [0.25, 0.26, 0.24]], "b": [[0.1], [0.3], [0.2]]}

    def fake_isolated(target, name, repeat):
        calls.append(name)
        times = per_call[name][sum(1 for c in calls if c == name) - 1]
        return {"times": times, "cpu_s": 2 * times[0], "backbones": ["efficientnet_lite0"], "peak_rss_mib": 500.0}

    monkeypatch.setattr(inference, "isolated", fake_isolated)
    monkeypatch.setattr(inference, "missing_bundled", lambda name: [])
    text = inference.bundled_table(["a", "b"], 3, tmp_path / "costs.json", processes=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    costs = json.loads((tmp_path / "costs.json").read_text())
    # process medians of a: 0.20, 0.45, 0.25 -> 0.25; of b: 0.1, 0.3, 0.2 -> 0.2
    assert costs["ms_per_image"] == pytest.approx({"a": 250.0, "b": 200.0})
    assert costs["cpu_ms_per_image"] == pytest.approx({"a": 600.0, "b": 400.0})  # 2 x the first call: 0.6, 1.0, 0.5
    assert "median of 3 processes" in text and "250 ms (200-450)" in text


def test_huge_pages_times_both_allocations_in_fresh_processes():
    from benchmarks import huge_pages

    (text,) = huge_pages.main(["--processes", "1", "--gigabytes", "0.01"])
    assert "NumPy default" in text and "zeros_in_small_pages" in text and "Kernel:" in text
    assert huge_pages.fill_seconds("small", 0.001) > 0


def test_positive_int_refuses_zero():
    import argparse

    from benchmarks import positive_int

    assert positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        positive_int("0")
