"""bench/vision.py: the CPU line (model, SIMD levels XNNPACK can use) read from a cpuinfo file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.vision.conftest import REPO


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vision", REPO / "bench" / "vision.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cpuinfo(tmp_path: Path, model: str, flags: str) -> Path:
    p = tmp_path / "cpuinfo"
    block = f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
    p.write_text(block + block.replace(": 0", ": 1"))
    return p


def test_cpu_without_avx2_gets_the_note(tmp_path: Path) -> None:
    info = _bench().cpu_info(_cpuinfo(tmp_path, "AMD EPYC", "fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma f16c"))
    assert info["model"] == "AMD EPYC"
    assert info["simd"] == ["sse4_1", "avx", "fma"]
    assert "no AVX2" in str(info["note"])


def test_cpu_with_avx2_but_no_vnni_gets_its_note(tmp_path: Path) -> None:
    info = _bench().cpu_info(_cpuinfo(tmp_path, "AMD EPYC", "sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 fma"))
    assert info["simd"] == ["sse4_1", "avx", "fma", "avx2"]
    assert "no VNNI" in str(info["note"])


def test_cpu_with_avx512_vnni_lists_every_level(tmp_path: Path) -> None:
    flags = "sse4_1 avx fma avx2 avx512f avx512bw avx512_vnni avx_vnni"
    info = _bench().cpu_info(_cpuinfo(tmp_path, "Intel Xeon", flags))
    assert info["simd"] == ["sse4_1", "avx", "fma", "avx2", "avx512f", "avx512_vnni", "avx_vnni"]
    assert "note" not in info


def test_raspberry_pi_cpuinfo(tmp_path: Path) -> None:
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\n\nModel\t\t: Raspberry Pi 5\n")
    info = _bench().cpu_info(p)
    assert info["model"] == "Raspberry Pi 5" and info["simd"] == ["asimd", "asimddp"] and "note" not in info


def test_missing_cpuinfo_is_unknown(tmp_path: Path) -> None:
    info = _bench().cpu_info(tmp_path / "absent")
    assert info["model"] == "unknown" and info["simd"] == [] and "note" not in info
