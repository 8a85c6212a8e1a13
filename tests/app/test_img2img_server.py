"""Image to image through the served app's API, as scripts and the page's tabs use it: ``/generate`` takes a
start image by name, a server path is refused as any other file is, the X/Y grid's Denoise axis and Compare
start from it."""

from __future__ import annotations

import pytest
from PIL import Image
from support import SMALL, make_studio

from sote_ui.core.metadata import parse_parameters, read_parameters

FAST = {**SMALL, "prompt": "1girl", "width": 128, "height": 128, "prior_steps": 4, "decoder_steps": 1}


@pytest.fixture(scope="module")
def served_studio(tiny_pair, tiny_effnet, studio_home):
    """The studio on the tiny pair with the tiny EfficientNet encoder."""
    return make_studio(tiny_pair, studio_home, effnet=str(tiny_effnet))


@pytest.fixture
def start(tmp_path):
    path = tmp_path / "start.png"
    Image.new("RGB", (160, 120), (200, 120, 40)).save(path)
    return path


def stored(path) -> dict:
    with Image.open(path) as image:
        return parse_parameters(read_parameters(image))


def test_generate_takes_a_start_image_by_name(app, client, start):
    from gradio_client import handle_file

    before = app.studio.engine.counters.snapshot()
    _, _, report, _, _ = client.predict(**{**FAST, "seed": 41}, init_image=handle_file(str(start)), denoise=0.5,
                                        api_name="/generate")
    ran = app.studio.engine.counters.since(before)
    values = stored(report["files"][0])
    assert values["denoise"] == 0.5 and values["init_image_note"].startswith("start.png sha256:")
    assert ran.prior_steps == 2  # half of the 4 prior steps
    _, _, plain, _, _ = client.predict(**{**FAST, "seed": 41}, api_name="/generate")
    assert "denoise" not in stored(plain["files"][0])


def test_a_server_path_as_start_image_is_refused_like_any_other_file(client, tmp_path):
    secret = tmp_path / "server-secret.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    raw = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": secret.name}
    with pytest.raises(Exception) as refused:
        client.predict(**{**FAST, "seed": 42}, init_image=raw, api_name="/generate")
    assert "not uploaded by a user" in str(refused.value)
    assert str(secret) not in str(refused.value)


def test_the_grid_varies_denoise_from_the_start_image(app, client, start):
    from gradio_client import handle_file

    before = app.studio.engine.counters.snapshot()
    _, _, info = client.predict(x_key="denoise", x_values="0.25, 0.75", y_key="(none)", y_values="",
                                **{**FAST, "seed": 43}, init_image=handle_file(str(start)), api_name="/grid")
    ran = app.studio.engine.counters.since(before)
    cells = [stored(path) for path in info["cell_files"][0]]
    assert [cell["denoise"] for cell in cells] == [0.25, 0.75]
    assert ran.prior_steps == 1 + 3  # round(4 x 0.25) and round(4 x 0.75)
    assert info["axes"]["x"] == ["Denoise", ["0.25", "0.75"]]


def test_compare_starts_both_sides_from_the_start_image(client, start):
    from gradio_client import handle_file

    current = {f"current_{key}": value for key, value in {**FAST, "seed": 44}.items()}
    sides = {"preset_a": "card-recommended", "preset_b": "secondary-cfg-1.2", "prompt": "1girl", "seed": 44,
             "seeds": 1, "width": 128, "height": 128, "prior_steps": 4, "decoder_steps": 1}
    sides.update({key: "(from each preset)" for key in ("aesthetic", "quality", "date", "rating")})
    _, _, _, _, report, _ = client.predict(**sides, **current, current_init_image=handle_file(str(start)),
                                           current_denoise=0.5, sent={}, api_name="/compare")
    for side in ("a", "b"):
        values = stored(report["files"][side][0])
        assert values["init_image_note"].startswith("start.png sha256:"), side
