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
