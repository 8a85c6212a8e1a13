"""The Gradio app driven through its API, as a client would: gradio_client against a live server.

The app runs in-process on the tiny random-weight pair (CPU, fp32); nothing is
mocked, every image comes out of the real diffusers pipelines. Requests stay at
256x256 (or 128x128) with a few steps so each call takes about a second.
The module serves one app (a studio and an engine of its own); each test
starts with the engine's caches empty, so the prior runs it counts are its
own (the seeds stay apart all the same).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from support import ROOT, SMALL, make_studio, pixels

from sote_ui.core.metadata import parse_parameters, read_parameters, split_parameters
from sote_ui.core.request import FIELD_NAMES, MAX_SEED, GenerationRequest
from sote_ui.service.compare import compose_grid

# SMALL without its seed: each call names the seed it uses, and presets carry none.
SETTINGS = {key: value for key, value in SMALL.items() if key != "seed"}
# User presets for /compare: pairs differing in one decoder setting, and in one prior setting.
COMPARE_PRESETS = {
    "cmp-dec-a": {"decoder_cfg": 1.0},
    "cmp-dec-b": {"decoder_cfg": 2.0},
    "cmp-pri-a": {"prior_cfg": 4.0},
    "cmp-pri-b": {"prior_cfg": 6.0},
}


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    """The module's studio, with user presets for /compare saved before the page is built (presets saved
    after launch are tested on their own)."""
    studio = make_studio(tiny_pair, studio_home)
    for name, values in COMPARE_PRESETS.items():
        studio.presets.save(name, {**SETTINGS, **values})
    return studio


def generate(client: Client, **values):
    """Call /generate with SETTINGS overridden by ``values``; return (this job's images, report)."""
    values = {**SETTINGS, **values}
    images, summary, report, _status, _preview = client.predict(**values, api_name="/generate")
    assert f"{len(report['seeds'])} image" in summary
    return images, report


def png_values(path) -> tuple[str, dict]:
    with Image.open(path) as image:
        text = read_parameters(image)
    assert text, f"{path} carries no parameters text"
    return text, parse_parameters(text)


# 1. Generate ------------------------------------------------------------------------


def test_generate_returns_pngs_carrying_the_requested_settings(client):
    gallery, report = generate(client, seed=101, prior_steps=3, decoder_steps=2, prior_cfg=5.5)
    assert report["seeds"] == [101]
    assert report["prior_steps_run"] == 3 and report["decoder_steps_run"] == 2
    newest = gallery[0]
    assert newest["caption"] == "seed 101 · 1girl, solo"
    text, values = png_values(newest["image"])
    assert "Sampler: DDPMWuerstchen" in text
    assert values["seed"] == 101
    assert (values["width"], values["height"]) == (256, 256)
    assert (values["prior_steps"], values["decoder_steps"]) == (3, 2)
    assert values["prior_cfg"] == 5.5
    assert values["prompt"] == "1girl, solo"
    with Image.open(newest["image"]) as image:
        assert image.size == (256, 256)
    # The copy saved to the outputs folder is the same image with the same text.
    assert report["parameters"][0] == text
    assert np.array_equal(pixels(report["files"][0]), pixels(newest["image"]))


def test_prompt_padding_is_a_named_parameter_of_generate(client):
    _, unmasked = generate(client, seed=109, prior_cfg=4.0)
    _, masked = generate(client, seed=109, prior_cfg=4.0, prompt_padding="masked")
    assert png_values(unmasked["files"][0])[1]["prompt_padding"] == "unmasked"  # the default
    assert png_values(masked["files"][0])[1]["prompt_padding"] == "masked"
    assert not np.array_equal(pixels(unmasked["files"][0]), pixels(masked["files"][0]))
    with pytest.raises(Exception, match="'sideways'.*not in the list of choices"):  # the radio's own check
        generate(client, seed=109, prompt_padding="sideways")


def test_composed_prompt_puts_tags_in_dataset_order(client):
    _, report = generate(client, seed=102, prompt="1girl, smile", aesthetic="aesthetic", quality="high quality",
                         date="mid", custom="anime wallpaper", rating="general")
    assert report["prompt"] == "aesthetic, high quality, mid, anime wallpaper, general, 1girl, smile"
    first_line = report["parameters"][0].splitlines()[0]
    assert first_line == report["prompt"]
    # The stored prompt reads back as the same picker choices.
    values = parse_parameters(report["parameters"][0])
    assert (values["aesthetic"], values["quality"], values["date"], values["custom"], values["rating"]) == (
        "aesthetic", "high quality", "mid", "anime wallpaper", "general")
    assert values["prompt"] == "1girl, smile"


def test_same_seed_gives_identical_pixels_and_another_seed_differs(client):
    first, _ = generate(client, seed=103)
    again, report = generate(client, seed=103)
    other, _ = generate(client, seed=104)
    assert report["seeds"] == [103]
    assert np.array_equal(pixels(first[0]["image"]), pixels(again[0]["image"]))
    assert not np.array_equal(pixels(first[0]["image"]), pixels(other[0]["image"]))


def test_seed_minus_one_is_random_and_reports_the_seed_it_used(client):
    _, one = generate(client, seed=-1)
    _, two = generate(client, seed=-1)
    for report in (one, two):
        (seed,) = report["seeds"]
        assert isinstance(seed, int) and 0 <= seed <= MAX_SEED
        assert parse_parameters(report["parameters"][0])["seed"] == seed
    assert one["seeds"] != two["seeds"]


def test_an_explicit_seed_is_used_as_given(client):
    # A1111's convention: any seed but -1 is used as it is, with no extra flag.
    first, one = generate(client, seed=5)
    again, two = generate(client, seed=5)
    assert one["seeds"] == two["seeds"] == [5]
    assert np.array_equal(pixels(first[0]["image"]), pixels(again[0]["image"]))


def test_generate_returns_this_jobs_images_only(client):
    generate(client, seed=121)
    images, report = generate(client, seed=122, count=2)
    assert [item["caption"] for item in images] == ["seed 122 · 1girl, solo", "seed 123 · 1girl, solo"]
    assert report["seeds"] == [122, 123]
    assert [png_values(item["image"])[1]["seed"] for item in images] == [122, 123]


def test_a_non_integer_seed_is_refused_not_rounded(client):
    with pytest.raises(Exception) as info:
        generate(client, seed=1.5)
    assert str(info.value) == "seed must be a whole number, got 1.5"


def test_stop_cancels_a_job_of_the_session_still_waiting_in_the_queue(app, client):
    from sote_ui.ui.wiring import queued_jobs

    studio, demo = app.studio, app.demo
    other = app.connect()  # another visitor keeps the GPU busy
    try:
        steps = studio.engine.counters.prior_steps
        busy = other.submit(**{**SETTINGS, "prior_steps": 60, "decoder_steps": 20, "count": 3, "seed": 131},
                            api_name="/generate")
        deadline = time.monotonic() + 60
        while studio.engine.counters.prior_steps == steps and time.monotonic() < deadline:
            time.sleep(0.05)  # until the other job is denoising
        before = studio.engine.counters.snapshot()
        mine = client.submit(**{**SETTINGS, "seed": 141}, api_name="/generate")
        while queued_jobs(demo, client.session_hash) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queued_jobs(demo, client.session_hash) == 1 and not busy.done()  # mine waits behind it
        assert "stopping" in client.predict(api_name="/stop")
        images, summary, report, _, _ = mine.result(timeout=120)
        _, _, other_report, _, _ = busy.result(timeout=120)
    finally:
        other.close()
    assert images == [] and report["stopped"] is True and report["cancelled_in_queue"] is True
    assert report["seeds"] == []
    assert summary.startswith("stopped before it started")
    assert "stopped" not in other_report and other_report["seeds"] == [131, 132, 133]
    ran = studio.engine.counters.since(before)
    assert ran.decoder_steps <= 3 * 20  # only the other visitor's images were decoded
    _, report = generate(client, seed=142)  # the next job of this session runs normally
    assert report["seeds"] == [142]


def test_a_closed_sessions_state_is_dropped(app, monkeypatch):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")
    holder = app.demo.state_holder
    clients = [app.connect() for _ in range(3)]
    sessions = [c.session_hash for c in clients]
    for c in clients:
        generate(c, seed=151)
    assert all(session in holder.session_data for session in sessions)
    for c in clients:
        c.close()
    deadline = time.monotonic() + 30
    while any(session in holder.session_data for session in sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [session for session in sessions if session in holder.session_data]


def test_the_api_page_lists_the_public_endpoints_only(app):
    info = app.demo.get_api_info()
    assert sorted(info["named_endpoints"]) == sorted(
        ["/generate", "/draft", "/stop", "/skip", "/stop_and_finish", "/compare", "/grid", "/list_presets",
         "/load_preset", "/save_preset", "/delete_preset", "/png_info", "/set_mode", "/status", "/suggest_tags",
         "/prompt_history", "/fix_prompt", "/redecode"])
    assert not info.get("unnamed_endpoints")
    assert "randomize_seed" not in [p["parameter_name"] for p in info["named_endpoints"]["/generate"]["parameters"]]


# 2. Bad input -------------------------------------------------------------------------


def test_width_below_the_slider_minimum_is_refused_then_good_request_works(client):
    with pytest.raises(Exception) as info:
        generate(client, seed=105, width=100)
    assert "128" in str(info.value) and "100" in str(info.value)
    _, report = generate(client, seed=105)
    assert report["seeds"] == [105]


def test_width_not_a_multiple_of_128_names_the_fix(client):
    with pytest.raises(Exception) as info:
        generate(client, seed=106, width=200)
    assert str(info.value) == "width 200 is not a multiple of 128; try 128 or 256"


def test_zero_prior_steps_is_refused_then_good_request_works(client):
    with pytest.raises(Exception) as info:
        generate(client, seed=107, prior_steps=0)
    assert "minimum value 1" in str(info.value)
    _, report = generate(client, seed=107)
    assert report["prior_steps_run"] == 3


def test_nan_cfg_sent_over_raw_http_is_refused_then_good_request_works(app, client):
    # gradio_client won't serialise NaN; Gradio's REST API (/gradio_api/call/...) accepts it as JSON.
    url = app.url
    # A raw client sends every field; sliders take no null, so the others go at their defaults.
    defaults = GenerationRequest().to_dict()
    values = {**{name: defaults[name] for name in FIELD_NAMES}, "prompt": "1girl", "negative_prompt": "",
              "aesthetic": "none", "quality": "none", "date": "none", "custom": "none", "rating": "none",
              "artist": "", "width": 256, "height": 256, "seed": 108, "prior_steps": 3, "prior_cfg": float("nan"),
              "decoder_steps": 2, "decoder_cfg": 1.0, "count": 1}
    body = json.dumps({"data": [values[name] for name in FIELD_NAMES] + [None, None, "off"]})
    assert "NaN" in body
    started = httpx.post(url + "gradio_api/call/generate", content=body,
                         headers={"content-type": "application/json"}, timeout=30)
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    events = httpx.get(url + f"gradio_api/call/generate/{event_id}", timeout=120).text
    assert "event: error" in events
    assert "prior_cfg must be a finite number" in events
    _, report = generate(client, seed=108)
    assert report["seeds"] == [108]


# 3. Presets --------------------------------------------------------------------------


def preset_rows(client: Client) -> dict[str, dict]:
    rows = client.predict(api_name="/list_presets")
    assert not [row for row in rows if "error" in row]
    return {row["name"]: row for row in rows}


def test_list_presets_lists_the_shipped_ones(client):
    rows = preset_rows(client)
    for name in ("card-recommended", "fast", "secondary-cfg-1.2", "later-decoder-defaults", "wallpaper"):
        assert rows[name]["shipped"] is True
    assert rows["card-recommended"]["values"]["prior_steps"] == 40
    assert rows["secondary-cfg-1.2"]["values"]["decoder_cfg"] == 1.2


def test_save_list_overwrite_load_and_delete_a_user_preset(app, client):
    presets_dir = app.presets
    name = "api-look"
    values = {**SETTINGS, "prior_cfg": 4.5, "decoder_cfg": 1.5, "rating": "sensitive"}
    choices, message = client.predict(name=name, **values, overwrite=False, api_name="/save_preset")
    assert choices["value"] == name
    assert name in message
    rows = preset_rows(client)
    assert rows[name]["shipped"] is False
    path = presets_dir / f"{name}.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert (stored["prior_cfg"], stored["decoder_cfg"], stored["rating"]) == (4.5, 1.5, "sensitive")
    assert (stored["width"], stored["height"]) == (256, 256)

    with pytest.raises(Exception) as info:
        client.predict(name=name, **{**values, "prior_cfg": 9.0}, overwrite=False, api_name="/save_preset")
    assert str(info.value) == f"a preset named '{name}' exists; tick overwrite or pick another name"
    assert json.loads(path.read_text(encoding="utf-8"))["prior_cfg"] == 4.5  # untouched

    client.predict(name=name, **{**values, "prior_cfg": 9.0}, overwrite=True, api_name="/save_preset")
    assert json.loads(path.read_text(encoding="utf-8"))["prior_cfg"] == 9.0

    loaded = client.predict(name=name, api_name="/load_preset")
    fields = dict(zip(FIELD_NAMES, loaded[:len(FIELD_NAMES)]))
    assert "value" not in fields["prompt"]  # a preset sets the look, not the subject
    assert fields["prior_cfg"]["value"] == 9.0
    assert fields["decoder_cfg"]["value"] == 1.5
    assert fields["rating"]["value"] == "sensitive"
    assert (fields["width"]["value"], fields["height"]["value"]) == (256, 256)
    resolution, status = loaded[len(FIELD_NAMES):]
    assert resolution["value"] == "custom"  # 256x256 is not one of the listed resolutions
    assert status == f"loaded preset {name}"

    choices, message = client.predict(name=name, api_name="/delete_preset")
    assert message == f"deleted preset {name}"
    assert not path.exists()
    assert name not in preset_rows(client)
    assert name not in [value for _, value in choices["choices"]]


def test_load_shipped_preset_returns_its_values(client):
    loaded = client.predict(name="fast", api_name="/load_preset")
    fields = dict(zip(FIELD_NAMES, loaded[:len(FIELD_NAMES)]))
    assert fields["prior_steps"]["value"] == 20 and fields["decoder_steps"]["value"] == 8
    assert (fields["width"]["value"], fields["height"]["value"]) == (1024, 1536)
    assert loaded[len(FIELD_NAMES)]["value"] == "1024x1536"


def test_deleting_a_shipped_preset_is_refused(client):
    with pytest.raises(Exception) as info:
        client.predict(name="fast", api_name="/delete_preset")
    assert str(info.value) == "'fast' is a shipped preset and can't be deleted"
    assert preset_rows(client)["fast"]["shipped"] is True


def test_another_session_can_load_a_preset_saved_after_launch(app, client):
    client.predict(name="shared-look", **{**SETTINGS, "prior_cfg": 3.5}, overwrite=True, api_name="/save_preset")
    other = app.connect()
    try:
        loaded = other.predict(name="shared-look", api_name="/load_preset")
    finally:
        other.close()
    assert dict(zip(FIELD_NAMES, loaded))["prior_cfg"]["value"] == 3.5


def test_saving_under_a_bad_name_is_refused(client):
    with pytest.raises(Exception) as info:
        client.predict(name="../escape", **SETTINGS, overwrite=False, api_name="/save_preset")
    assert "is not allowed" in str(info.value)


# 4. PNG info ------------------------------------------------------------------------


def test_png_info_reads_back_a_generated_image(client):
    gallery, report = generate(client, seed=109, prompt="1girl, hoodie", rating="general", prior_cfg=6.0)
    _preview, raw, parsed = client.predict(path=handle_file(gallery[0]["image"]), api_name="/png_info")
    assert raw == report["parameters"][0]
    assert parsed["seed"] == 109
    assert (parsed["width"], parsed["height"]) == (256, 256)
    assert (parsed["prior_steps"], parsed["decoder_steps"], parsed["prior_cfg"]) == (3, 2, 6.0)
    assert parsed["rating"] == "general" and parsed["prompt"] == "1girl, hoodie"
    assert parsed["mode"] == "fp32"


def test_png_info_refuses_a_text_file(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(Exception) as info:
        client.predict(path=handle_file(str(text)), api_name="/png_info")
    assert "image" in str(info.value).lower()


def test_png_info_refuses_a_file_that_only_looks_like_a_png(client, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not a PNG")
    with pytest.raises(Exception) as info:
        client.predict(path=handle_file(str(fake)), api_name="/png_info")
    assert str(info.value) == "the file is not an image this app can read (PNG, JPEG or WebP)"


def test_png_info_on_an_image_without_settings_says_so(client, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (32, 32), "white").save(plain)
    with pytest.raises(Exception) as info:
        client.predict(path=handle_file(str(plain)), api_name="/png_info")
    assert "carries no generation settings" in str(info.value)


# 5. Memory mode ------------------------------------------------------------------------


def test_set_mode_switches_and_generation_still_works(app, client):
    studio = app.studio
    try:
        device_md, _status = client.predict(new_mode="fp8", api_name="/set_mode")
        assert "**Mode:** fp8" in device_md
        assert studio.engine.plan.mode.value == "fp8"
        _, report = generate(client, seed=110)
        assert report["mode"] == "fp8"
        assert "Memory mode: fp8" in report["parameters"][0]

        with pytest.raises(Exception) as info:
            client.predict(new_mode="offload-bf16", api_name="/set_mode")
        assert "no GPU here" in str(info.value) and "offload-bf16" in str(info.value)
    finally:
        device_md, _status = client.predict(new_mode="fp32", api_name="/set_mode")
    assert "**Mode:** fp32" in device_md
    assert studio.engine.plan.mode.value == "fp32"
    _, report = generate(client, seed=111)
    assert report["mode"] == "fp32" and report["seeds"] == [111]


# 6. Compare and grids -------------------------------------------------------------------


def run_compare(client: Client, a: str, b: str, seed: int, seeds: int):
    return client.predict(preset_a=a, preset_b=b, prompt="1girl, solo", seed=seed, seeds=seeds,
                          api_name="/compare")


def test_compare_decoder_only_difference_shares_the_prior(app, client):
    studio = app.studio
    before = studio.engine.counters.snapshot()
    slider, strip, diff, summary, report = run_compare(client, "cmp-dec-a", "cmp-dec-b", 1201, 2)
    image_a, image_b, sheet = report["files"]["a"][0], report["files"]["b"][0], report["files"]["sheet"]
    ran = studio.engine.counters.since(before)
    assert report["prior_shared"] is True
    assert report["seeds"] == [1201, 1202]
    assert ran.prior_runs == 2  # once per seed, for both sides
    assert ran.decoder_runs == 4
    assert ran.prior_steps == 2 * 3 and ran.decoder_steps == 4 * 2
    assert report["prior_runs"] == 2 and report["decoder_steps_run"] == 8
    assert report["diff"] == {"decoder_cfg": {"a": 1.0, "b": 2.0}}
    assert diff["data"][0] == ["decoder_cfg", "1.0", "2.0"]
    assert diff["data"][1][0] == "seconds"  # each side's time, next to what differs
    assert [item["caption"] for item in strip] == ["seed 1201 · A", "seed 1201 · B", "seed 1202 · A",
                                                   "seed 1202 · B"]
    assert np.array_equal(pixels(slider[0]), pixels(image_a))
    assert np.array_equal(pixels(slider[1]), pixels(image_b))
    assert "seeds 1201, 1202" in summary and "prior shared" in summary
    assert not np.array_equal(pixels(image_a), pixels(image_b))
    assert parse_parameters(png_values(image_b)[0])["decoder_cfg"] == 2.0
    with Image.open(sheet) as image:  # two columns of 256 plus labels
        assert image.width > 2 * 256 and image.height > 2 * 256


def test_stopping_a_compare_keeps_the_pairs_it_finished(app, client):
    studio = app.studio
    decoded = studio.engine.counters.decoder_runs
    job = client.submit(preset_a="cmp-dec-a", preset_b="cmp-dec-b", prompt="1girl, solo", seed=1251, seeds=6,
                        prior_steps=40, decoder_steps=10, api_name="/compare")
    deadline = time.monotonic() + 120
    while studio.engine.counters.decoder_runs < decoded + 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first pair is finished
    assert "stopping" in client.predict(api_name="/stop")
    slider, strip, diff, summary, report = job.result(timeout=120)
    assert report["stopped"] is True
    assert 1 <= len(report["seeds"]) < 6 and report["seeds"][0] == 1251
    assert len(strip) == 2 * len(report["seeds"])
    assert summary.startswith("stopped: the finished pairs · ")
    assert all(os.path.exists(path) for path in report["files"]["a"] + report["files"]["b"])


def test_compare_prior_difference_runs_the_prior_for_each_side(app, client):
    studio = app.studio
    before = studio.engine.counters.snapshot()
    *_, report = run_compare(client, "cmp-pri-a", "cmp-pri-b", 1301, 1)
    image_a, image_b = report["files"]["a"][0], report["files"]["b"][0]
    ran = studio.engine.counters.since(before)
    assert report["prior_shared"] is False
    assert ran.prior_runs == 2 and report["prior_runs"] == 2
    assert report["diff"] == {"prior_cfg": {"a": 4.0, "b": 6.0}}
    assert not np.array_equal(pixels(image_a), pixels(image_b))


def test_grid_runs_each_prior_once_and_labels_the_png(app, client):
    studio = app.studio
    before = studio.engine.counters.snapshot()
    grid_path, summary, report = client.predict(x_key="prior_cfg", x_values="2,4", y_key="decoder_steps", y_values="1,2",
                                       prompt="1girl, solo", width=128, height=128, prior_steps=2, seed=1401,
                                       api_name="/grid")
    ran = studio.engine.counters.since(before)
    assert report["cells"] == 4
    assert report["prior_runs"] == 2 and ran.prior_runs == 2
    assert report["prior_steps_run"] == 2 * 2
    assert report["decoder_steps_run"] == (1 + 2) * 2 == ran.decoder_steps
    blank = Image.new("RGB", (128, 128))
    expected = compose_grid([[blank, blank], [blank, blank]], ["Prior CFG 2.0", "Prior CFG 4.0"],
                            ["Decoder steps 1", "Decoder steps 2"]).size
    assert summary.startswith("4 cells in ") and "prior run 2 times" in summary
    with Image.open(grid_path) as image:
        assert image.size == expected
        assert image.width > 2 * 128 and image.height > 2 * 128
        text = read_parameters(image)
    assert list(report["size"]) == list(expected)
    _, _, pairs = split_parameters(text)
    assert pairs["Grid X"] == "prior_cfg: 2.0, 4.0"
    assert pairs["Grid Y"] == "decoder_steps: 1, 2"
    assert pairs["Seed"] == "1401"
    # Each cell is saved full size with its own settings, row by row.
    cells = report["cell_files"]
    assert [len(row) for row in cells] == [2, 2]
    for yi, steps in enumerate((1, 2)):
        for xi, cfg in enumerate((2.0, 4.0)):
            with Image.open(cells[yi][xi]) as cell:
                assert cell.size == (128, 128)
                values = parse_parameters(read_parameters(cell))
            assert (values["prior_cfg"], values["decoder_steps"]) == (cfg, steps)


def test_grid_prompt_search_and_replace_labels_the_terms(app, client):
    studio = app.studio
    before = studio.engine.counters.snapshot()
    grid_path, summary, report = client.predict(x_key="prompt_sr", x_values="smile, frown", y_key="(none)",
                                                y_values="", prompt="1girl, smile", width=128, height=128,
                                                prior_steps=2, decoder_steps=1, seed=1601, api_name="/grid")
    assert report["cells"] == 2 and studio.engine.counters.since(before).prior_runs == 2
    with Image.open(grid_path) as image:
        _, _, pairs = split_parameters(read_parameters(image))
    assert pairs["Grid X"] == "prompt_sr: smile, frown"
    with pytest.raises(Exception) as info:
        client.predict(x_key="prompt_sr", x_values="cat, dog", y_key="(none)", y_values="", prompt="1girl, smile",
                       api_name="/grid")
    assert "'cat' is not in the prompt" in str(info.value)


def test_compare_accepts_a_preset_saved_after_launch(client):
    client.predict(name="cmp-late", **{**SETTINGS, "decoder_cfg": 1.5}, overwrite=True, api_name="/save_preset")
    *_, report = run_compare(client, "cmp-late", "cmp-dec-a", 1501, 1)
    assert report["diff"] == {"decoder_cfg": {"a": 1.5, "b": 1.0}}


def test_grid_with_an_unknown_value_is_refused(client):
    with pytest.raises(Exception) as info:
        client.predict(x_key="prior_steps", x_values="2, lots", y_key="(none)", y_values="", **SETTINGS,
                       api_name="/grid")
    assert "prior_steps must be a whole number" in str(info.value)


# 7. Import cost ----------------------------------------------------------------------------


def test_importing_the_ui_does_not_import_torch_or_diffusers(tmp_path):
    code = (
        "import json, sys\n"
        "import sote_ui.ui.app as app\n"
        "from sote_ui.service.studio import Studio, StudioConfig\n"
        "imported = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        f"app.build_demo(Studio(StudioConfig(presets_dir={str(tmp_path / 'presets')!r}, outputs=None)))\n"
        "built = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print(json.dumps({'import': imported, 'build': built}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "build": []}


def test_stopping_a_running_job_keeps_finished_images_and_names_the_device(app, client):
    studio = app.studio
    decoded = studio.engine.counters.decoder_steps
    job = client.submit(**{**SETTINGS, "prior_steps": 60, "decoder_steps": 20, "count": 6, "seed": 171},
                        api_name="/generate")
    deadline = time.monotonic() + 60
    while studio.engine.counters.decoder_steps == decoded and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first image is being decoded
    assert "stopping" in client.predict(api_name="/stop")
    images, summary, report, status, _preview = job.result(timeout=120)
    assert report["stopped"] is True and "cancelled_in_queue" not in report
    assert len(images) == len(report["seeds"]) < 6
    assert "the CPU is free" in summary and summary == status


def test_the_generate_button_says_what_the_model_is_doing(app, tmp_path):
    from sote_ui.service.studio import Studio, StudioConfig
    from sote_ui.ui.app import generate_label

    studio = app.studio
    assert generate_label(studio) == "Generate"  # loaded
    missing = Studio(StudioConfig(prior=str(tmp_path / "none"), decoder=str(tmp_path / "none"), device="cpu",
                                  outputs=None, presets_dir=str(tmp_path / "presets")))
    assert generate_label(missing) == "Generate (the model is loading…)"  # not started yet
    missing.start_loading()
    missing.wait_loaded(60)
    assert generate_label(missing) == "Generate (the model failed to load: see the status)"
    assert "model load failed" in missing.status()
