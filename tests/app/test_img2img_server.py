"""Image to image through the served app's API, as scripts and the page's tabs use it: ``/generate`` takes a
start image by name, a server path is refused as any other file is, the X/Y grid's Denoise axis and Compare
start from it."""

from __future__ import annotations

import pytest
from PIL import Image
from support import SMALL

from sote_ui.core.metadata import parse_parameters, read_parameters

FAST = {**SMALL, "prompt": "1girl", "width": 128, "height": 128, "prior_steps": 4, "decoder_steps": 1}


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


def test_a_server_path_as_start_image_is_refused_alike_whether_or_not_the_file_exists(app, tmp_path):
    import httpx

    secret = tmp_path / "server-secret.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    # Posted as a raw HTTP client would: gradio_client would upload a local file named this way.
    params = app.client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    replies = []
    for path in (secret, tmp_path / "no-such-file.png"):
        raw = {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}
        values = {**FAST, "seed": 42, "init_image": raw}
        data = [values.get(p["parameter_name"], p.get("parameter_default")) for p in params]
        event = httpx.post(f"{app.url}gradio_api/call/generate", json={"data": data}, timeout=30).json()["event_id"]
        with httpx.stream("GET", f"{app.url}gradio_api/call/generate/{event}", timeout=120) as stream:
            replies.append("".join(stream.iter_text()).replace(str(path), "PATH"))
    assert "event: error" in replies[0] and "not uploaded by a user" in replies[0]
    assert replies[0] == replies[1]  # nothing tells whether the file exists, nor what it holds


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
    _, _, _, _, report = client.predict(**sides, **current, current_init_image=handle_file(str(start)),
                                           current_denoise=0.5, api_name="/compare")
    for side in ("a", "b"):
        values = stored(report["files"][side][0])
        assert values["init_image_note"].startswith("start.png sha256:"), side


def test_progress_and_its_time_left_cover_the_hi_res_pass(app):
    from sote_ui.ui.summaries import PassLabels

    reports, labels = [], PassLabels()

    def on_progress(p):
        reports.append((labels.stage(p), p.step, p.steps, p.done, p.total))

    shots, _ = app.studio.generate({**FAST, "seed": 45, "prior_steps": 3, "hires_scale": 2.0, "hires_denoise": 0.5},
                                   on_progress=on_progress)
    with Image.open(shots[0].path) as image:
        assert image.size == (256, 256)
    # Prior 3 and decoder 1 steps, then the hi-res pass: round(3 x 0.5) = 2 prior steps and the decoder's 1.
    assert [(stage, step) for stage, step, *_ in reports] == [
        ("prior", 1), ("prior", 2), ("prior", 3), ("decoder", 1), ("hi-res prior", 1), ("hi-res prior", 2),
        ("hi-res decoder", 1)]
    assert {total for *_, total in reports} == {7}  # the total the time left is counted on knows every pass
    assert [done for *_, done, _ in reports] == list(range(1, 8))
