"""The automatic mode choice counts image to image's encoder and hi-res fix's larger second pass."""

from __future__ import annotations

from sote_ui.core.memory import FULL_SIZE, DeviceInfo, GiB, Mode, choose_mode, estimate, mode_table

MODES = [m for m in Mode if m is not Mode.AUTO]


def nvidia(free_gb: float) -> DeviceInfo:
    return DeviceInfo("cuda", "cuda:0", "NVIDIA GPU", 24 * GiB, int(free_gb * GiB), True, (8, 6))


def test_a_start_image_counts_the_encoder_in_every_mode():
    for mode in MODES:
        plain = estimate(mode, FULL_SIZE, 1024, 1536)
        with_image = estimate(mode, FULL_SIZE, 1024, 1536, init_image=True)
        assert with_image >= plain, mode
        assert with_image - plain < 0.3 * GiB, mode  # a 20M-parameter encoder, not a model
    # All on the device, its weights stay there beside the models': always more.
    assert estimate(Mode.BF16, FULL_SIZE, 1024, 1536, init_image=True) > estimate(Mode.BF16, FULL_SIZE, 1024, 1536)


def test_hires_counts_the_second_pass_at_its_larger_size():
    for mode in MODES:
        first = estimate(mode, FULL_SIZE, 1024, 1536)
        direct = estimate(mode, FULL_SIZE, 1536, 2304)
        hires = estimate(mode, FULL_SIZE, 1024, 1536, hires_size=(1536, 2304))
        assert hires > first, mode
        assert hires >= direct, mode  # the second pass is a 1536x2304 generation plus the re-encode


def test_auto_leaves_a_mode_that_fits_only_the_first_pass():
    first = estimate(Mode.BF16, FULL_SIZE, 1024, 1536)
    hires = estimate(Mode.BF16, FULL_SIZE, 1024, 1536, hires_size=(1536, 2304))
    device = nvidia((first + hires) / 2 / GiB)
    assert choose_mode("auto", device, FULL_SIZE).mode is Mode.BF16
    plan = choose_mode("auto", device, FULL_SIZE, hires_size=(1536, 2304))
    assert plan.mode is not Mode.BF16 and plan.estimate_bytes <= device.free_bytes
    assert "1024x1536 then 1536x2304 (hi-res fix)" in plan.reason and "bf16 needs" in plan.reason


def test_the_mode_table_shows_the_job():
    device = nvidia(20)
    plain = dict((m, need) for m, need, _ in mode_table(device, FULL_SIZE))
    hires = dict((m, need) for m, need, _ in mode_table(device, FULL_SIZE, hires_size=(2048, 3072)))
    assert float(hires["bf16"].strip("~ GiB")) > float(plain["bf16"].strip("~ GiB"))
