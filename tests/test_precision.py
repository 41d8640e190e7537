"""--dtype auto: bfloat16 only where the hardware has it natively (precision.py)."""
import pytest
import torch

from icefall_ext.train.precision import autocast_dtype, cpu_flags, cpu_has_native_bf16

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
ICELAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes bf16 i8mm\n"
CPU = torch.device("cpu")


def test_flags_are_read_from_cpuinfo_text():
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(ZEN4)
    assert "bf16" in cpu_flags(GRAVITON)
    assert cpu_flags("no flags line here") == set()


@pytest.mark.parametrize("cpuinfo, native", [(ZEN4, True), (SAPPHIRE, True), (ICELAKE, False), (GRAVITON, False)])
def test_auto_is_bfloat16_only_on_cpus_with_native_bf16(cpuinfo, native):
    # avx512f alone (Ice Lake) emulates bf16 in oneDNN: slower than float32, so auto keeps float32
    assert cpu_has_native_bf16(cpuinfo) is native
    assert autocast_dtype("auto", CPU, cpuinfo) is (torch.bfloat16 if native else None)


def test_explicit_choices_are_kept_whatever_the_cpu():
    assert autocast_dtype("float32", CPU, ZEN4) is None
    assert autocast_dtype("bfloat16", CPU, ICELAKE) is torch.bfloat16


def test_float16_on_cpu_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="needs CUDA"):
        autocast_dtype("float16", CPU, ZEN4)
    with pytest.raises(ValueError, match="must be one of"):
        autocast_dtype("fp8", CPU, ZEN4)
