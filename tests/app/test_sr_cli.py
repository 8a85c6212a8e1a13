"""Super-resolution from the command line: an image generated on the tiny pair, then the same prompt at twice
its width and height with the sr ControlNet following it (the pair's own tiny ControlNets and encoder)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sote_ui.cli import main
from sote_ui.core.files import file_sha256
from sote_ui.core.metadata import parse_parameters, read_parameters
from sote_ui.engine.controlnet import HUB_FILES

STEPS = ["--prior-steps", "2", "--decoder-steps", "2", "--quiet", "--prompt", "1girl, solo", "--seed", "5"]


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch, tiny_pair):
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path / "home"))
    prior, decoder = tiny_pair
    model = ["--prior", str(prior), "--decoder", str(decoder), "--mode", "fp32", "--device", "cpu"]

    def call(*argv: str):
        try:
            code = main(["generate", *argv, *model])
        except SystemExit as exc:
            code = exc.code
        _, err = capsys.readouterr()
        return code, err

    return call


def test_super_resolution_doubles_a_generated_image(cli, tiny_pair, tmp_path):
    small, large, direct = tmp_path / "small.png", tmp_path / "large.png", tmp_path / "direct.png"
    code, err = cli(*STEPS, "--width", "256", "--height", "384", "--out", str(small))
    assert code == 0, err
    code, err = cli(*STEPS, "--width", "512", "--height", "768", "--control", "sr", "--control-image", str(small),
                    "--control-strength", "0.8", "--out", str(large))
    assert code == 0, err
    code, err = cli(*STEPS, "--width", "512", "--height", "768", "--out", str(direct))
    assert code == 0, err

    with Image.open(small) as image:
        assert image.size == (256, 384)
    with Image.open(large) as image:
        assert image.size == (512, 768)
        text = read_parameters(image)
        upscaled = np.asarray(image.convert("RGB"), dtype=np.int16)
    values = parse_parameters(text)
    assert values["control"] == "sr" and values["control_strength"] == 0.8
    assert values["width"] == 512 and values["height"] == 768
    net = tiny_pair[0].parent / HUB_FILES["sr"]
    assert f"Control model hash: {file_sha256(net)[:10]}" in text
    # The control acted: the same seed and size without it gives other pixels.
    assert np.abs(upscaled - np.asarray(Image.open(direct).convert("RGB"), dtype=np.int16)).max() > 0
