"""The command line's image to image, hi-res fix, sampler and shift flags, and --effnet, in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sote_ui.cli import build_parser
from sote_ui.core.metadata import parse_pairs, parse_parameters, read_parameters

FAST = ["--width", "256", "--height", "256", "--prior-steps", "4", "--decoder-steps", "2", "--quiet"]


@pytest.fixture
def start(tmp_path):
    path = tmp_path / "start.png"
    Image.new("RGB", (120, 90), (220, 60, 20)).save(path)
    return str(path)


def _read(path):
    with Image.open(path) as image:
        text = read_parameters(image)
        return text, np.asarray(image.convert("RGB"))


def test_the_flags_have_the_agreed_names():
    args = build_parser().parse_args(
        ["generate", "--init-image", "a.png", "--denoise", "0.4", "--resize-mode", "fit", "--hires-scale", "1.5",
         "--hires-denoise", "0.3", "--hires-steps", "12", "--prior-sampler", "dpmpp_2m", "--decoder-sampler", "lcm",
         "--prior-shift", "2", "--decoder-shift", "1.5", "--effnet", "enc.safetensors"])
    assert (args.init_image, args.denoise, args.resize_mode, args.hires_scale, args.hires_denoise, args.hires_steps,
            args.prior_sampler, args.decoder_sampler, args.prior_shift, args.decoder_shift, args.effnet) == \
        ("a.png", "0.4", "fit", "1.5", "0.3", "12", "dpmpp_2m", "lcm", "2", "1.5", "enc.safetensors")


def test_image_to_image_with_samplers_writes_its_settings(cli, model_flags, tmp_path, start):
    out = tmp_path / "i2i.png"
    code, stdout, err = cli("generate", "--prompt", "1girl, solo", "--seed", "3", "--init-image", start,
                            "--denoise", "0.5", "--prior-sampler", "euler_a", "--prior-shift", "2",
                            "--decoder-sampler", "lcm", "--out", str(out), *FAST, *model_flags)
    assert code == 0, err
    text, image = _read(Path(stdout.strip()))
    pairs = parse_pairs(text.splitlines()[-1])
    assert (pairs["Denoising strength"], pairs["Sampler"], pairs["Prior shift"], pairs["Decoder sampler"]) == \
        ("0.5", "Euler a", "2", "LCM")
    assert pairs["Init image"].startswith("start.png sha256:")
    # --from-image brings the settings back; with the start image given again it makes the same pixels
    again = tmp_path / "again.png"
    code, stdout, err = cli("generate", "--from-image", str(out), "--init-image", start, "--out", str(again),
                            "--quiet", *model_flags)
    assert code == 0, err
    assert np.array_equal(_read(again)[1], image)


def test_hires_flags_make_the_final_size(cli, model_flags, tmp_path):
    out = tmp_path / "hires.png"
    code, stdout, err = cli("generate", "--prompt", "1girl", "--seed", "5", "--hires-scale", "1.5",
                            "--hires-steps", "4", "--out", str(out), *FAST, *model_flags)
    assert code == 0, err
    text, image = _read(out)
    assert image.shape == (384, 384, 3)
    values = parse_parameters(text)
    assert (values["width"], values["hires_scale"], values["hires_steps"], values["hires_denoise"]) == \
        (256, 1.5, 4, 0.5)


@pytest.mark.parametrize(("flags", "message"), [
    (["--denoise", "1.2"], "error: denoise must be between 0 and 1, got 1.2"),
    (["--prior-sampler", "lcm"], "error: unknown prior_sampler 'lcm'; choose one of: ddpm, dpmpp_2m, euler_a"),
    (["--hires-scale", "2", "--width", "2048", "--height", "2048"],
     "error: the hi-res fix makes 2048x2048 into 4096x4096 (16.8 MP), over the limit of 4.2 MP and 4096 per side; "
     "lower hires_scale or the size"),
])
def test_bad_values_are_one_line_before_any_model_loads(cli, flags, message):
    code, stdout, err = cli("generate", "--prompt", "1girl", "--quiet", *flags, "--prior", "/nonexistent/prior",
                            "--decoder", "/nonexistent/decoder")
    assert code == 2 and stdout == ""
    assert err.strip() == message


def test_a_start_file_that_is_no_image_is_one_line(cli, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code, _, err = cli("generate", "--prompt", "1girl", "--init-image", str(bad), "--quiet")
    assert code == 2
    assert err.strip() == "error: start image 'notes.png' is not an image Pillow can read (PNG, JPEG, WebP...)"


def test_a_missing_effnet_file_is_one_line(cli, model_flags, tmp_path, start):
    code, _, err = cli("generate", "--prompt", "1girl", "--init-image", start, "--denoise", "0.5",
                       "--effnet", str(tmp_path / "missing.safetensors"), *FAST, *model_flags)
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # (loading prints progress bars)
    assert len(errors) == 1 and "missing.safetensors" in errors[0] and "--effnet" in errors[0]
    assert "Traceback" not in err and str(tmp_path) not in errors[0]
