"""Tag-level A/B: B is A without one tag (of the prompt, or a picker's value), same seed; A reuses the prior and
text encoding of the image just generated with the same settings."""

from __future__ import annotations

import pytest
from support import SMALL, make_studio

from sote_ui.core.errors import InputError
from sote_ui.service.compare import tag_sides

FORM = {**SMALL, "prompt": "1girl, solo, smile,\nhoodie", "aesthetic": "very aesthetic", "quality": "best quality",
        "date": "newest", "rating": "general", "artist": "wlop", "seed": 42}


def test_a_prompt_tag_goes_from_b_only():
    a, b = tag_sides(FORM, "smile")
    assert a == FORM
    assert b["prompt"] == "1girl, solo,\nhoodie"
    assert {k: v for k, v in b.items() if k != "prompt"} == {k: v for k, v in FORM.items() if k != "prompt"}


def test_a_picker_value_is_set_to_none_in_b():
    _, b = tag_sides(FORM, "very aesthetic")
    assert b["aesthetic"] == "none" and b["prompt"] == FORM["prompt"]
    _, b = tag_sides(FORM, "art by wlop")
    assert b["artist"] == ""
    _, b = tag_sides({**FORM, "prompt": "general, 1girl"}, "general")  # in the prompt and the rating picker
    assert b["prompt"] == "1girl" and b["rating"] == "none"


def test_a_weighted_tag_and_a_tag_that_is_not_there():
    _, b = tag_sides({**FORM, "prompt": "1girl, (smile:1.2), solo"}, "(smile:1.2)")
    assert b["prompt"] == "1girl, solo"
    with pytest.raises(InputError, match="^'frown' is not a tag of the prompt nor a picker's value$"):
        tag_sides(FORM, "frown")
    with pytest.raises(InputError, match="^click a tag to compare with and without it$"):
        tag_sides(FORM, "  ")


@pytest.fixture
def studio(tiny_pair, tmp_path, loaded_engine):
    loaded_engine.clear_caches()
    studio = make_studio(tiny_pair, tmp_path)
    studio._engine = loaded_engine
    yield studio
    studio.close()


def test_a_reuses_the_image_just_made_and_only_b_runs_its_prior(studio):
    form = {**FORM, "seed": 77}
    studio.generate(form)
    a_values, b_values = tag_sides(form, "smile")
    a, b = studio.request_from(a_values), studio.request_from(b_values)
    pairs, info, _ = studio.compare(a, b, [77])
    assert info["prior_runs"] == 1 and info["prior_steps_run"] == SMALL["prior_steps"]
    assert "smile" in pairs[0][0].request.composed_prompt() and "smile" not in pairs[0][1].request.composed_prompt()
    assert info["diff"] == {"prompt": {"a": form["prompt"], "b": "1girl, solo,\nhoodie"}}
