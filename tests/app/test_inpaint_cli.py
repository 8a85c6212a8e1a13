"""Inpainting, outpainting and ControlNets from the command line, on the tiny pair and tiny ControlNets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sote_ui.core.metadata import MASK_NOT_RESTORED, parse_parameters, read_parameters
from sote_ui.engine.builders import build_tiny_controlnet

FAST = ["--width", "256", "--height", "256", "--prior-steps", "2", "--decoder-steps", "2", "--quiet",
        "--prompt", "1girl, solo", "--seed", "5"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    return {kind: build_tiny_controlnet(folder / kind, kind) for kind in ("canny", "inpaint", "sr")}


@pytest.fixture
def start(tmp_path):
    image = Image.new("RGB", (256, 256), (210, 190, 170))
    ImageDraw.Draw(image).ellipse((50, 50, 200, 200), fill=(30, 80, 190))
    path = tmp_path / "start.png"
    image.save(path)
    return path


@pytest.fixture
def mask(tmp_path):
    image = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(image).rectangle((100, 100, 150, 150), fill=255)
    path = tmp_path / "mask.png"
    image.save(path)
    return path


def one_error(err: str) -> str:
    # Loading the model draws progress bars on stderr (carriage returns); the message is one line of its own.
    lines = [line for line in err.replace("\r", "\n").split("\n") if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_inpaint_from_the_cli_keeps_the_outside_and_records_the_mask(cli, model_flags, nets, start, mask, tmp_path):
    out = tmp_path / "out.png"
    code, stdout, err = cli("generate", *FAST, "--init-image", str(start), "--mask", str(mask), "--mask-blur", "2",
                            "--controlnet", str(nets["inpaint"]), "--out", str(out), *model_flags)
    assert code == 0, err
    with Image.open(out) as image:
        values = parse_parameters(read_parameters(image))
        result = np.asarray(image.convert("RGB"))
    source = np.asarray(Image.open(start).convert("RGB"))
    assert np.array_equal(result[:90], source[:90]) and np.array_equal(result[160:], source[160:])
    assert values["mask_blur"] == 2 and values["control"] == "inpaint" and values["mask_note"] == MASK_NOT_RESTORED
    code, _, err = cli("generate", "--from-image", str(out), "--out", str(tmp_path / "again.png"),
                       "--init-image", str(start), "--mask", str(mask), "--controlnet", str(nets["inpaint"]),
                       "--quiet", *model_flags)
    assert code == 0 and f"note: {MASK_NOT_RESTORED}" in err


def test_outpaint_from_the_cli_gives_the_extended_size(cli, model_flags, nets, start, tmp_path):
    out = tmp_path / "wide.png"
    code, _, err = cli("generate", *FAST, "--init-image", str(start), "--outpaint", "left:128", "--mask-blur", "0",
                       "--controlnet", str(nets["inpaint"]), "--out", str(out), *model_flags)
    assert code == 0, err
    with Image.open(out) as image:
        assert image.size == (384, 256)
        assert np.array_equal(np.asarray(image.convert("RGB"))[:, 128:], np.asarray(Image.open(start).convert("RGB")))


def test_canny_and_super_resolution_from_the_cli(cli, model_flags, nets, start, tmp_path, tiny_effnet):
    code, _, err = cli("generate", *FAST, "--control", "canny", "--control-image", str(start), "--canny-low", "50",
                       "--controlnet", str(nets["canny"]), "--out", str(tmp_path / "canny.png"), *model_flags)
    assert code == 0, err
    with Image.open(tmp_path / "canny.png") as image:
        assert "Canny thresholds: 50/200" in read_parameters(image)
    small = tmp_path / "small.png"
    Image.open(start).resize((128, 128)).save(small)
    code, _, err = cli("generate", *FAST, "--control", "sr", "--control-image", str(small),
                       "--controlnet", str(nets["sr"]), "--out", str(tmp_path / "sr.png"), *model_flags)
    assert code == 0, err
    with Image.open(tmp_path / "sr.png") as image:
        assert image.size == (256, 256) and "Control: sr" in read_parameters(image)


@pytest.mark.parametrize("extra, expected", [
    (["--mask", "{mask}"], "error: a mask needs a start image (init_image) to repaint"),
    (["--init-image", "{start}", "--mask", "{empty}"],
     "error: mask 'empty.png' is empty: nothing to repaint (white marks what to repaint)"),
    (["--init-image", "{start}", "--mask", "{text}"],
     "error: mask 'notes.png' is not an image Pillow can read (PNG, JPEG, WebP...)"),
    (["--init-image", "{start}", "--outpaint", "left:100"], "error: outpaint left 100 is not a multiple of 128; try 128"),
    (["--control", "canny", "--control-image", "{start}", "--controlnet", "{missing}"],
     "error: the ControlNet 'gone.safetensors' does not exist or is not a file; pass a local copy with "
     "--controlnet PATH, or download it once: huggingface-cli download stabilityai/stable-cascade "
     "controlnet/canny.safetensors"),
    (["--control", "canny", "--control-image", "{start}", "--controlnet", "{inpaint}"],
     "error: the ControlNet 'inpainting.safetensors' is an inpaint ControlNet; control canny needs a canny one"),
])
def test_bad_input_is_one_line(cli, model_flags, nets, start, mask, tmp_path, extra, expected):
    empty = tmp_path / "empty.png"
    Image.new("L", (256, 256), 0).save(empty)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    names = dict(mask=mask, start=start, empty=empty, text=text, missing=tmp_path / "gone.safetensors",
                 inpaint=nets["inpaint"])
    argv = [part.format(**names) for part in extra]
    code, _, err = cli("generate", *FAST, *argv, "--out", str(tmp_path / "x.png"), *model_flags)
    assert code != 0
    assert one_error(err) == expected
    assert not (tmp_path / "x.png").exists()


def test_the_demo_model_has_controlnets_and_an_older_one_is_rebuilt(tmp_path, monkeypatch):
    import importlib.util

    from support import ROOT

    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    spec = importlib.util.spec_from_file_location("sote_app_entry_cn", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    folder = app.tiny_model_dir()
    names = sorted(path.name for path in (folder / "controlnet").iterdir())
    assert names == ["canny.safetensors", "inpainting.safetensors", "super_resolution.safetensors"]
    (folder / "controlnet" / "super_resolution.safetensors").unlink()  # as a demo model of an earlier version
    assert app.tiny_model_dir() == folder
    assert (folder / "controlnet" / "super_resolution.safetensors").is_file()
