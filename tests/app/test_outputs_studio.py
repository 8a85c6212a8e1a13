"""The studio's side of reloads and the Outputs tab: each browser's latest images, the outputs folder checked
on every name, the tab on a server without an outputs folder, and stored form values never trusted."""

from __future__ import annotations

import pytest
from support import SMALL

from sote_ui.core.errors import InputError
from sote_ui.service.studio import Studio, StudioConfig


@pytest.fixture
def studio(tiny_pair, engine, tmp_path):
    prior, decoder = tiny_pair
    made = Studio(StudioConfig(prior=str(prior), decoder=str(decoder), device="cpu", mode="fp32",
                               outputs=str(tmp_path / "outputs"), presets_dir=str(tmp_path / "presets")), engine=engine)
    yield made
    made.close()


def test_a_browsers_images_are_found_by_its_later_pages_only(studio):
    browser, other = "a" * 32, "b" * 32
    studio.attach_browser("page-1", browser)
    studio.attach_browser("page-of-another-browser", other)
    shots, _ = studio.generate({**SMALL, "prior_steps": 2, "decoder_steps": 1, "seed": 801}, session="page-1")
    studio.attach_browser("page-2", browser)  # the same browser, reloaded
    assert [s.path for s in studio.browser_shots(browser)] == [shots[0].path]
    assert studio.browser_shots(browser)[0].request.seed == 801
    assert studio.browser_shots(other) == []
    assert not studio.browser_running(browser, "page-2")  # the run has ended
    studio.generate({**SMALL, "prior_steps": 2, "decoder_steps": 1, "seed": 802}, session="unattached")
    assert [s.request.seed for s in studio.browser_shots(browser)] == [801]  # a page of no known browser


def test_the_outputs_folder_refuses_names_outside_it(studio, tmp_path):
    (tmp_path / "secret.png").write_bytes(b"keep")
    for name in ("../secret.png", str(tmp_path / "secret.png"), ".trash"):
        with pytest.raises(InputError) as caught:
            studio.trash_output(name)
        assert str(tmp_path) not in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(InputError):
            studio.output_settings(name)
    assert (tmp_path / "secret.png").read_bytes() == b"keep"


def test_a_server_without_an_outputs_folder_says_so(tiny_pair, tmp_path):
    from sote_ui.ui.app import build_demo
    from sote_ui.ui.outputs_tab import NO_FOLDER

    prior, decoder = tiny_pair
    studio = Studio(StudioConfig(prior=str(prior), decoder=str(decoder), device="cpu", outputs=None,
                                 presets_dir=str(tmp_path / "presets")))
    try:
        with pytest.raises(InputError, match="keeps no outputs folder"):
            studio.list_outputs()
        with pytest.raises(InputError, match="keeps no outputs folder"):
            studio.trash_output("sote-1.png")
        demo = build_demo(studio)
        shown = {block.elem_id: getattr(block, "value", None) for block in demo.blocks.values()}
        assert shown["outputs_none"] == NO_FOLDER
        assert "outputs_gallery" not in shown
    finally:
        studio.close()


def test_stored_form_values_that_no_control_takes_are_left_out():
    from sote_ui.core.request import DEFAULT_LIMITS
    from sote_ui.ui.generate.persist import restorable

    stored = {"prompt": "1girl, __missing__", "negative_prompt": 42, "width": "huge", "height": 384, "seed": -5,
              "aesthetic": "not a tag", "prior_steps": 7, "prior_cfg": 1e9, "resolution": "1x1",
              "rating": "sensitive", "count": 2, "unknown": "x"}
    assert restorable(stored, DEFAULT_LIMITS) == {"prompt": "1girl, __missing__", "height": 384, "prior_steps": 7,
                                                  "rating": "sensitive", "count": 2}
    assert restorable("not a dict", DEFAULT_LIMITS) == {}
    assert restorable({"resolution": "1024x1024", "width": 1024}, DEFAULT_LIMITS) == {
        "resolution": "1024x1024", "width": 1024}


def test_earlier_shots_join_the_gallery_once_each_run_as_a_run(studio):
    from sote_ui.ui.generate.persist import add_earlier_shots
    from sote_ui.ui.session import SessionState

    shots, _ = studio.generate({**SMALL, "prior_steps": 2, "decoder_steps": 1, "seed": 810, "count": 2})
    for shot in shots:
        shot.job = 5  # one run of an earlier page
    session = SessionState()
    assert add_earlier_shots(session, shots) == 2
    assert add_earlier_shots(session, shots) == 0  # a second load adds nothing twice
    assert [s.job for s in session.shots] == [1, 1] and session.jobs == 1
    assert shots[0].job == 5  # the earlier page's own shots are left as they were
    assert session.selected == 0 and session.last_seed == 810  # as after a run: its first image


def test_on_a_space_the_shared_outputs_are_not_deleted(studio, monkeypatch):
    shots, _ = studio.generate({**SMALL, "prior_steps": 2, "decoder_steps": 1, "seed": 820})
    name = shots[0].path.rsplit("/", 1)[1]
    monkeypatch.setenv("SPACE_ID", "someone/sote-studio")
    with pytest.raises(InputError, match="can't be deleted on this shared server"):
        studio.trash_output(name)
    assert [f.name for f in studio.list_outputs().files] == [name]
