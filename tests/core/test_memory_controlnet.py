"""The memory estimate counts a request's ControlNet, following the memory mode."""

from __future__ import annotations

from sote_ui.core.memory import FULL_SIZE, DeviceInfo, GiB, Mode, choose_mode, estimate

MODES = [m for m in Mode if m is not Mode.AUTO]


def test_a_controlnet_counts_in_every_mode_and_sr_weighs_most():
    for mode in MODES:
        plain = estimate(mode, FULL_SIZE, 1024, 1536)
        canny = estimate(mode, FULL_SIZE, 1024, 1536, control="canny")
        sr = estimate(mode, FULL_SIZE, 1024, 1536, control="sr")
        assert plain <= canny <= sr, mode
    # All on the device: its weights stay there beside the models' (54M parameters in bf16, ~0.12 GiB).
    extra = estimate(Mode.BF16, FULL_SIZE, 1024, 1536, control="canny") - estimate(Mode.BF16, FULL_SIZE, 1024, 1536)
    assert 0.1 * GiB < extra < 0.6 * GiB
    extra_sr = estimate(Mode.BF16, FULL_SIZE, 1024, 1536, control="sr") - estimate(Mode.BF16, FULL_SIZE, 1024, 1536)
    assert 0.4 * GiB < extra_sr < 1.0 * GiB  # 203M parameters


def test_auto_names_the_controlnet_when_it_decides():
    plain = estimate(Mode.BF16, FULL_SIZE, 1024, 1536)
    with_sr = estimate(Mode.BF16, FULL_SIZE, 1024, 1536, control="sr")
    device = DeviceInfo("cuda", "cuda:0", "NVIDIA GPU", 24 * GiB, int((plain + with_sr) / 2), True, (8, 6))
    assert choose_mode("auto", device, FULL_SIZE).mode is Mode.BF16
    plan = choose_mode("auto", device, FULL_SIZE, control="sr")
    assert plan.mode is not Mode.BF16 and "with the sr ControlNet" in plan.reason
