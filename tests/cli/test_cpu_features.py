"""`convcore info`'s CPU feature list: from /proc/cpuinfo, else numpy's
public runtime report (never a private numpy module), else unknown."""
import numpy as np

from convcore.cli import info


def test_reads_the_flags_line_of_a_cpuinfo_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma ssse3\n")
    assert info.cpu_features(str(path)) == ["sse2", "avx2", "fma"]


def test_reads_the_features_line_of_an_arm_cpuinfo_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("Features\t: fp asimd evtstrm aes\n")
    assert info.cpu_features(str(path)) == ["asimd"]


def test_without_cpuinfo_falls_back_to_numpys_public_report(tmp_path, monkeypatch):
    report = {"SIMD Extensions": {"baseline": ["SSE", "SSE2", "SSE3"],
                                  "found": ["AVX", "AVX2", "FMA3"], "not found": ["AVX512F"]}}
    monkeypatch.setattr(np, "show_config", lambda mode="stdout": report)
    assert info.cpu_features(str(tmp_path / "missing")) == ["sse2", "avx", "avx2", "fma"]


def test_grouped_numpy_names_map_to_features(tmp_path, monkeypatch):
    report = {"SIMD Extensions": {"baseline": ["X86_V2"], "found": ["X86_V3"]}}
    monkeypatch.setattr(np, "show_config", lambda mode="stdout": report)
    assert info.cpu_features(str(tmp_path / "missing")) == ["sse2", "avx", "avx2", "fma"]


def test_nothing_known_gives_an_empty_list(tmp_path, monkeypatch):
    def no_report(mode="stdout"):
        raise TypeError("show_config() got an unexpected keyword argument 'mode'")
    monkeypatch.setattr(np, "show_config", no_report)
    assert info.cpu_features(str(tmp_path / "missing")) == []


def test_no_private_numpy_module_is_used():
    import inspect
    source = inspect.getsource(info)
    assert "_multiarray_umath" not in source and "numpy._core" not in source
