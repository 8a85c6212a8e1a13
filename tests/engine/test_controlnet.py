"""Stability's stage-C ControlNets: the module's layout, loading, the hooks on the tiny prior, canny, inpainting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from support import SMALL, pixels

from sote_ui.core.errors import ModelError
from sote_ui.core.request import build_request
from sote_ui.engine.builders import build_full_controlnet, build_tiny_controlnet
from sote_ui.engine.controlnet import (
    ControlNet,
    canny,
    controlled,
    full_config,
    load_controlnet,
    resblocks,
    save_controlnet,
)

# 1. The full-size layout equals Stability's ------------------------------------------------------------
#
# The expected table is read off Stability's modules/controlnet.py (ControlNet.__init__ and CNetResBlock)
# and configs/inference/controlnet_c_3b_*.yaml, not from our module: projections are
# Sequential(Conv2d(1280, 1280, 1, bias=False), LeakyReLU, Conv2d(1280, c_proj=2048, 1, bias=False)), one per
# entry of controlnet_blocks [0, 4, 8, 12, 51, 55, 59, 63]; the effnet backbone is torchvision's
# efficientnet_v2_s().features (20,177,488 parameters: torchvision's 21,458,488 less the 1280x1000
# classifier and its bias) with backbone[0][0] replaced by Conv2d(c_in, 24, 3, stride=2, bias=False);
# the "large" backbone is Conv2d(c_in, 16384, 1), LeakyReLU, Conv2d(16384, 1024, 1), 8 CNetResBlock(1024)
# (LayerNorm2d, GELU, Conv2d 3x3, LayerNorm2d, GELU, Conv2d 3x3), Conv2d(1024, 1280, 1).
V2_S_FEATURES_PARAMS = 21_458_488 - (1280 * 1000 + 1000)
PROJ_BLOCKS = [0, 4, 8, 12, 51, 55, 59, 63]


def stability_projection_table() -> dict[str, tuple[int, ...]]:
    table = {}
    for i in range(len(PROJ_BLOCKS)):
        table[f"projections.{i}.0.weight"] = (1280, 1280, 1, 1)
        table[f"projections.{i}.2.weight"] = (2048, 1280, 1, 1)
    return table


def stability_large_backbone_table(c_in: int) -> dict[str, tuple[int, ...]]:
    table = {"backbone.0.weight": (16384, c_in, 1, 1), "backbone.0.bias": (16384,),
             "backbone.2.weight": (1024, 16384, 1, 1), "backbone.2.bias": (1024,),
             "backbone.11.weight": (1280, 1024, 1, 1), "backbone.11.bias": (1280,)}
    for block in range(3, 11):
        for norm in (0, 3):
            table[f"backbone.{block}.blocks.{norm}.weight"] = (1024,)
            table[f"backbone.{block}.blocks.{norm}.bias"] = (1024,)
        for conv in (2, 5):
            table[f"backbone.{block}.blocks.{conv}.weight"] = (1024, 1024, 3, 3)
            table[f"backbone.{block}.blocks.{conv}.bias"] = (1024,)
    return table


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("kind, c_in", [("canny", 1), ("inpaint", 4)])
def test_full_effnet_controlnets_have_stabilitys_keys_and_shapes(kind, c_in):
    with torch.device("meta"):
        model = ControlNet(full_config(kind))
    table = shapes(model)
    projections = {k: v for k, v in table.items() if k.startswith("projections.")}
    assert projections == stability_projection_table()
    backbone = {k: v for k, v in table.items() if k.startswith("backbone.")}
    assert set(table) == set(projections) | set(backbone)
    assert backbone["backbone.0.0.weight"] == (24, c_in, 3, 3)
    assert "backbone.0.0.bias" not in backbone
    assert backbone["backbone.7.0.weight"] == (1280, 256, 1, 1)  # the features' last 1x1 conv to 1280
    params = sum(np.prod(shape) for key, shape in backbone.items()
                 if not key.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert params == V2_S_FEATURES_PARAMS - 24 * 3 * 3 * 3 + 24 * c_in * 3 * 3


def test_full_super_resolution_controlnet_has_stabilitys_keys_and_shapes():
    with torch.device("meta"):
        model = ControlNet(full_config("sr"))
    assert shapes(model) == stability_large_backbone_table(16) | stability_projection_table()


def test_published_sizes_match_the_files_stability_lists():
    # canny and inpainting ~218 MB, super-resolution ~814 MB in fp32 (the Hub's listing).
    sizes = {}
    for kind in ("canny", "inpaint", "sr"):
        with torch.device("meta"):
            model = ControlNet(full_config(kind))
        sizes[kind] = sum(t.numel() * 4 for t in model.state_dict().values() if t.dtype.is_floating_point) / 1e6
    assert 210 < sizes["canny"] < 225 and 210 < sizes["inpaint"] < 225
    assert 800 < sizes["sr"] < 830


# 2. Loading -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-controlnets")
    return {kind: build_tiny_controlnet(folder / kind, kind) for kind in ("canny", "inpaint", "sr")}


def test_tiny_files_load_strictly_and_round_trip(tiny_nets):
    net = load_controlnet(tiny_nets["inpaint"], "inpaint")
    assert net.config.c_in == 4 and net.config.proj_blocks == (0, 2, 3)
    again = load_controlnet(save_controlnet(net, tiny_nets["inpaint"].parent / "copy.safetensors"), "inpaint")
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])


def test_a_file_of_another_kind_is_a_one_line_error(tiny_nets):
    with pytest.raises(ModelError) as info:
        load_controlnet(tiny_nets["canny"], "inpaint")
    assert str(info.value) == ("the ControlNet 'canny.safetensors' is a canny ControlNet; control inpaint needs "
                               "an inpaint one")


def test_a_full_size_file_is_recognised_by_its_shapes(tmp_path):
    path = build_full_controlnet(tmp_path, "canny")
    assert path.name == "canny.safetensors"
    with pytest.raises(ModelError, match="is a canny ControlNet; control inpaint"):
        load_controlnet(path, "inpaint")
    net = load_controlnet(path, "canny")
    assert net.config == full_config("canny")


def test_missing_and_foreign_files_are_one_line_errors(tmp_path):
    with pytest.raises(ModelError, match="'nope.safetensors' does not exist"):
        load_controlnet(tmp_path / "nope.safetensors", "canny")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_controlnet(junk, "canny")
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="not one of Stability's stage-C ControlNets"):
        load_controlnet(tmp_path / "other.safetensors", "canny")


def test_offline_hub_file_is_a_one_line_error_naming_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_controlnet(None, "inpaint")
    message = str(info.value)
    assert "controlnet/inpainting.safetensors" in message and "\n" not in message


# 3. Hooks on the prior ----------------------------------------------------------------------------


def test_controls_reach_the_resblock_calls_stability_names(engine):
    unet = engine.prior_pipe.prior
    blocks = resblocks(unet)
    assert len(blocks) == 4  # the tiny prior: one ResBlock per level, down then up
    x = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(0))
    kwargs = dict(timestep_ratio=torch.tensor([0.5]), clip_text_pooled=torch.zeros(1, 1, 32),
                  clip_text=torch.zeros(1, 77, 32), clip_img=torch.zeros(1, 1, 32))
    ones = torch.ones(1, 32, 2, 2)
    with torch.no_grad():
        plain = unet(x, **kwargs).sample
        with controlled(unet, [ones, None, None, ones], strength=0.0) as off:
            same = unet(x, **kwargs).sample
        with controlled(unet, [ones, None, None, ones], strength=2.0) as on:
            seen = []
            watchers = [b.register_forward_pre_hook(lambda m, a, i=i: seen.append((i, a[0].clone())))
                        for i, b in enumerate(blocks)]
            controlled_out = unet(x, **kwargs).sample
            for handle in watchers:
                handle.remove()
    assert torch.equal(plain, same) and off.applied == 0
    assert on.applied == 2 and not torch.equal(plain, controlled_out)
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert len(unet._forward_pre_hooks) == 0 and all(len(b._forward_pre_hooks) == 0 for b in blocks)


@pytest.fixture
def control_engine(engine, tiny_nets):
    """The shared engine pointed at a tiny ControlNet of the request's kind."""
    saved = engine.controlnet_path
    engine._controlnets.clear()

    def use(kind):
        engine.controlnet_path = str(tiny_nets[kind])
        engine._controlnets.clear()
        return engine

    yield use
    engine.controlnet_path = saved
    engine._controlnets.clear()


@pytest.fixture
def start(tmp_path):
    image = Image.new("RGB", (256, 256), (200, 180, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 60, 190, 190), fill=(40, 60, 200))
    draw.rectangle((10, 200, 240, 240), fill=(250, 250, 250))
    path = tmp_path / "start.png"
    image.save(path)
    return path


def test_canny_strength_zero_is_pixel_identical_and_one_differs(control_engine, start):
    engine = control_engine("canny")
    plain = engine.generate(build_request(dict(SMALL, control_image=str(start))))
    zero = engine.generate(build_request(dict(SMALL, control="canny", control_image=str(start),
                                              control_strength=0)))
    assert engine.last_control is None
    one = engine.generate(build_request(dict(SMALL, control="canny", control_image=str(start))))
    applied = engine.last_control.applied
    again = engine.generate(build_request(dict(SMALL, control="canny", control_image=str(start), seed=1234,
                                               prior_steps=3)).with_seed())
    assert np.array_equal(pixels(plain), pixels(zero))
    assert not np.array_equal(pixels(plain), pixels(one))
    assert applied == 3 * 3  # three prior steps, three controlled ResBlock calls each
    assert np.array_equal(pixels(one), pixels(again))  # cached or not, the same seed gives the same pixels
    engine.clear_caches()
    fresh = engine.generate(build_request(dict(SMALL, control="canny", control_image=str(start))))
    assert np.array_equal(pixels(one), pixels(fresh))  # a fresh run is deterministic too


def test_control_acts_only_inside_its_step_range(control_engine, start):
    engine = control_engine("canny")
    engine.generate(build_request(dict(SMALL, prior_steps=4, control="canny", control_image=str(start),
                                       control_start=0.5, control_end=1.0)))
    assert engine.last_control.applied == 2 * 3  # steps 3 and 4 of 4
    engine.generate(build_request(dict(SMALL, prior_steps=4, control="canny", control_image=str(start),
                                       control_start=0.0, control_end=0.25)))
    assert engine.last_control.applied == 1 * 3


def test_parameters_name_the_control_and_its_file_hash(control_engine, start):
    from sote_ui.core.files import file_sha256

    engine = control_engine("canny")
    result = engine.generate(build_request(dict(SMALL, control="canny", control_image=str(start),
                                                control_strength=0.8)))
    text = result.images[0].parameters
    assert "Control: canny" in text and "Control strength: 0.8" in text
    assert f"Control model hash: {file_sha256(engine.controlnet_path)[:10]}" in text


# 4. Inpainting and outpainting on the tiny pair ----------------------------------------------------


@pytest.fixture
def mask(tmp_path):
    image = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(image).rectangle((96, 96, 160, 160), fill=255)
    path = tmp_path / "mask.png"
    image.save(path)
    return path


def outside(mask_path, reach):
    from PIL import ImageFilter

    grown = Image.open(mask_path).convert("L").filter(ImageFilter.MaxFilter(2 * reach + 1))
    return np.asarray(grown) == 0


def test_inpainting_keeps_every_pixel_beyond_the_feather(control_engine, start, mask):
    from sote_ui.core.masks import feather_reach

    engine = control_engine("inpaint")
    result = engine.generate(build_request(dict(SMALL, init_image=str(start), mask=str(mask), mask_blur=4,
                                                denoise=0.75)))
    out = pixels(result)
    source = np.asarray(Image.open(start).convert("RGB"))
    keep = outside(mask, feather_reach(4))
    assert np.array_equal(out[keep], source[keep])
    assert not np.array_equal(out[~keep], source[~keep])  # the masked area was repainted
    # from the start image at denoise 0.75: the last round(3 x 0.75) = 2 of 3 steps run, each controlled
    assert engine.last_control.applied == 2 * 3
    text = result.images[0].parameters
    assert "Mask blur: 4" in text and "Control: inpaint" in text and "Mask hash: " in text


def test_masked_area_only_generates_the_crop_and_pastes_it_back(control_engine, start, mask):
    from sote_ui.core.masks import feather_reach

    engine = control_engine("inpaint")
    result = engine.generate(build_request(dict(SMALL, init_image=str(start), mask=str(mask),
                                                inpaint_area="masked", mask_blur=2)))
    out = pixels(result)
    assert out.shape == (256, 256, 3)
    source = np.asarray(Image.open(start).convert("RGB"))
    keep = outside(mask, feather_reach(2))
    assert np.array_equal(out[keep], source[keep])
    assert "Inpaint area: Only masked" in result.images[0].parameters


def test_outpaint_keeps_the_original_canvas_and_gives_the_extended_size(control_engine, start):
    engine = control_engine("inpaint")
    result = engine.generate(build_request(dict(SMALL, init_image=str(start), outpaint="right:128,up:128",
                                                mask_blur=0)))
    out = pixels(result)
    assert out.shape == (384, 384, 3)
    source = np.asarray(Image.open(start).convert("RGB"))
    assert np.array_equal(out[128:, :256], source)
    assert "Outpaint: " in result.images[0].parameters


def test_a_mask_of_another_size_is_resized_with_a_note(control_engine, start, tmp_path):
    small_mask = tmp_path / "small.png"
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).rectangle((24, 24, 40, 40), fill=255)
    image.save(small_mask)
    engine = control_engine("inpaint")
    result = engine.generate(build_request(dict(SMALL, init_image=str(start), mask=str(small_mask))))
    assert any("resized to the picture's 256x256" in w for w in result.warnings)


# 5. Canny ---------------------------------------------------------------------------------------------


def reference_canny(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """A plain-loop Canny (OpenCV's definition: Sobel 3x3, L1 magnitude, 4-direction NMS, hysteresis)."""
    rows, cols = gray.shape
    g = np.pad(gray.astype(np.float64), 1, mode="edge")
    mag = np.zeros((rows, cols))
    gxs = np.zeros((rows, cols))
    gys = np.zeros((rows, cols))
    for y in range(rows):
        for x in range(cols):
            w = g[y:y + 3, x:x + 3]
            gx = (w[0, 2] + 2 * w[1, 2] + w[2, 2]) - (w[0, 0] + 2 * w[1, 0] + w[2, 0])
            gy = (w[2, 0] + 2 * w[2, 1] + w[2, 2]) - (w[0, 0] + 2 * w[0, 1] + w[0, 2])
            gxs[y, x], gys[y, x], mag[y, x] = gx, gy, abs(gx) + abs(gy)

    def m(y, x):
        return mag[y, x] if 0 <= y < rows and 0 <= x < cols else 0.0

    cand = np.zeros((rows, cols), bool)
    for y in range(rows):
        for x in range(cols):
            a = mag[y, x]
            if a <= low:
                continue
            ax, ay = abs(gxs[y, x]), abs(gys[y, x])
            if ay < ax * np.tan(np.pi / 8):
                ok = a > m(y, x - 1) and a >= m(y, x + 1)
            elif ay > ax * np.tan(3 * np.pi / 8):
                ok = a > m(y - 1, x) and a >= m(y + 1, x)
            elif gxs[y, x] * gys[y, x] > 0:
                ok = a > m(y - 1, x - 1) and a > m(y + 1, x + 1)
            else:
                ok = a > m(y - 1, x + 1) and a > m(y + 1, x - 1)
            cand[y, x] = ok
    out = cand & (mag > high)
    changed = True
    while changed:
        changed = False
        for y in range(rows):
            for x in range(cols):
                if cand[y, x] and not out[y, x] and out[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any():
                    out[y, x] = changed = True
    return out


def test_canny_matches_a_plain_reference_on_a_test_image():
    image = Image.new("RGB", (48, 40), (30, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 5, 30, 33), fill=(220, 220, 220))
    draw.line((0, 39, 47, 0), fill=(120, 120, 120), width=2)
    draw.rectangle((34, 8, 44, 30), fill=(90, 90, 90))
    ours = np.asarray(canny(image, 100, 200)) > 0
    reference = reference_canny(np.asarray(image.convert("L")), 100, 200)
    assert ours.sum() > 50
    assert np.array_equal(ours, reference)


def test_canny_thresholds_decide_which_edges_stay():
    image = Image.new("RGB", (32, 32), (0, 0, 0))
    # a faint square: L1 magnitude 4 x 30 = 120 along its sides, at most 180 at its corners
    ImageDraw.Draw(image).rectangle((8, 8, 23, 23), fill=(30, 30, 30))
    assert not (np.asarray(canny(image, 100, 200)) > 0).any()
    edges = np.asarray(canny(image, 50, 100)) > 0
    assert edges[8:24, 8].any() and edges[8, 8:24].any() and not edges[15, 15]
