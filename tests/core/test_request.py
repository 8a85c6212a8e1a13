"""The request vocabulary: defaults, conversion and validation (pure logic, no torch)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SMALL

from sote_ui.core import tags
from sote_ui.core.errors import InputError
from sote_ui.core.presets import PresetStore
from sote_ui.core.request import (
    DECODER_KEYS,
    FIELD_NAMES,
    MAX_REFERENCES,
    MAX_SEED,
    PRIOR_KEYS,
    GenerationRequest,
    Limits,
    build_request,
    decoder_only_difference,
    validate,
)


def test_defaults_are_the_model_cards():
    req = GenerationRequest()
    assert (req.width, req.height) == (1024, 1536)
    assert (req.prior_steps, req.prior_cfg, req.decoder_steps, req.decoder_cfg) == (40, 8.0, 10, 1.0)
    assert req.negative_prompt == tags.DEFAULT_NEGATIVE
    assert (req.aesthetic, req.quality, req.date) == ("very aesthetic", "best quality", "newest")
    assert req.seed == -1 and req.count == 1


def test_composed_prompt_puts_picked_tags_first():
    req = build_request({"prompt": "1girl, solo", "seed": 7})
    assert req.composed_prompt() == "very aesthetic, best quality, newest, 1girl, solo"


def test_every_field_is_either_a_prior_or_a_decoder_key_or_count():
    assert set(PRIOR_KEYS) | set(DECODER_KEYS) | {"count"} == set(FIELD_NAMES)
    assert not set(PRIOR_KEYS) & set(DECODER_KEYS)


def test_text_values_are_converted():
    req = build_request({"prompt": "x", "width": "256", "height": 384.0, "prior_cfg": "6.5", "seed": " 7 ",
                         "decoder_steps": "3", "aesthetic": "  Very Aesthetic ", "rating": "", "count": 2.0})
    assert (req.width, req.height, req.seed, req.decoder_steps, req.count) == (256, 384, 7, 3, 2)
    assert req.prior_cfg == 6.5 and isinstance(req.prior_cfg, float)
    assert isinstance(req.width, int) and isinstance(req.height, int)
    assert req.aesthetic == "very aesthetic"
    assert req.rating == tags.NONE


def test_none_values_keep_the_base():
    base = build_request({"prompt": "a", "width": 256, "prior_steps": 5})
    req = build_request({"prompt": None, "width": None, "height": 512}, base=base)
    assert (req.prompt, req.width, req.height, req.prior_steps) == ("a", 256, 512, 5)


def test_to_dict_round_trips():
    req = build_request({"prompt": "1girl", "artist": "someone", "custom": "anime wallpaper", "seed": 3,
                         "decoder_cfg": 1.5, "count": 4})
    assert build_request(req.to_dict()) == req


def test_with_seed():
    fixed = build_request({"prompt": "a", "seed": 5})
    assert fixed.with_seed() is fixed
    random_one = build_request({"prompt": "a"})
    assert random_one.seed == -1
    picked = random_one.with_seed(random.Random(1))
    assert 0 <= picked.seed <= MAX_SEED
    assert picked == replace(random_one, seed=picked.seed)
    assert random_one.with_seed(random.Random(1)).seed == picked.seed  # the rng decides
    seeds = {random_one.with_seed().seed for _ in range(8)}
    assert len(seeds) > 1


def test_the_seeds_of_a_count_stay_valid():
    # the images of a run use seed, seed+1, ...: each must be a seed that can be typed back in
    build_request({"prompt": "a", "seed": MAX_SEED - 2, "count": 3})
    with pytest.raises(InputError) as info:
        build_request({"prompt": "a", "seed": MAX_SEED - 1, "count": 3})
    assert "seed" in str(info.value) and "count" in str(info.value) and str(MAX_SEED - 2) in str(info.value)

    class Highest(random.Random):
        def randint(self, a, b):
            return b

    for count in (1, 2, 16):
        picked = build_request({"prompt": "a", "count": count}).with_seed(Highest())
        assert picked.seed + count - 1 == MAX_SEED
        validate(picked)


def test_differences_and_decoder_only():
    a = build_request({"prompt": "a", "seed": 1})
    assert a.differences(a) == {}
    b = replace(a, decoder_cfg=2.0, decoder_steps=4)
    assert a.differences(b) == {"decoder_cfg": (1.0, 2.0), "decoder_steps": (10, 4)}
    assert decoder_only_difference(a, b)
    assert not decoder_only_difference(a, a)  # no difference at all is not "decoder only"
    assert not decoder_only_difference(a, replace(b, prior_cfg=4.0))
    assert not decoder_only_difference(a, replace(a, seed=2))


def test_limits_can_be_tightened():
    small = Limits(max_pixels=512 * 512, max_count=2)
    build_request({"prompt": "a", "width": 512, "height": 512}, limits=small)
    with pytest.raises(InputError, match="MP"):
        build_request({"prompt": "a", "width": 512, "height": 640}, limits=small)
    with pytest.raises(InputError, match="count"):
        build_request({"prompt": "a", "width": 256, "height": 256, "count": 3}, limits=small)


BAD = [
    ({"width": 300}, "width"),
    ({"height": 1000}, "height"),
    ({"width": 0}, "width"),
    ({"width": -128}, "width"),
    ({"width": 4224, "height": 128}, "width"),
    ({"width": 256.5}, "width"),
    ({"width": True}, "width"),
    ({"height": "big"}, "height"),
    ({"width": 2048, "height": 2176}, "2048x2176"),  # multiples of 128 but over the pixel budget
    ({"prior_steps": 0}, "prior_steps"),
    ({"prior_steps": 151}, "prior_steps"),
    ({"decoder_steps": 0}, "decoder_steps"),
    ({"decoder_steps": -3}, "decoder_steps"),
    ({"prior_cfg": float("nan")}, "prior_cfg"),
    ({"prior_cfg": "inf"}, "prior_cfg"),
    ({"prior_cfg": float("-inf")}, "prior_cfg"),
    ({"prior_cfg": 31}, "prior_cfg"),
    ({"prior_cfg": "strong"}, "prior_cfg"),
    ({"decoder_cfg": -1}, "decoder_cfg"),
    ({"decoder_cfg": "nan"}, "decoder_cfg"),
    ({"decoder_cfg": False}, "decoder_cfg"),
    ({"count": 0}, "count"),
    ({"count": 17}, "count"),
    ({"count": 1.5}, "count"),
    ({"seed": -2}, "seed"),
    ({"seed": MAX_SEED + 1}, "seed"),
    ({"seed": float("inf")}, "seed"),
    ({"aesthetic": "pretty"}, "aesthetic"),
    ({"quality": "okay quality"}, "quality"),
    ({"date": "2020"}, "date"),
    ({"rating": "pg-13"}, "rating"),
    ({"custom": "manga"}, "custom"),
    ({"sampler": "euler"}, "sampler"),
    ({"prompt": "", "aesthetic": "none", "quality": "none", "date": "none"}, "prompt"),
    ({"prompt": " , ,\n", "aesthetic": "none", "quality": "none", "date": "none"}, "prompt"),
    ({"prompt": "tag, " * 2000}, "prompt"),
    ({"negative_prompt": "x" * 9000}, "negative_prompt"),
    ({"artist": "a" * 8001}, "artist"),
    ({"prompt": 5}, "prompt"),
    ({"negative_prompt": ["a"]}, "negative_prompt"),
    ({"prompt": "a\x00b"}, "prompt"),
]


@pytest.mark.parametrize("values,field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises_one_line_input_error_naming_the_field(values, field):
    merged = {"prompt": "1girl", **values}
    with pytest.raises(InputError) as info:
        build_request(merged)
    message = str(info.value)
    assert field in message
    assert "\n" not in message and message.strip() == message and message


def test_size_message_suggests_multiples():
    with pytest.raises(InputError, match="try 256 or 384"):
        build_request({"prompt": "a", "width": 300})


def test_validate_catches_a_request_built_by_hand():
    with pytest.raises(InputError, match="decoder_cfg"):
        validate(GenerationRequest(prompt="a", decoder_cfg=math.inf))
    with pytest.raises(InputError, match="width"):
        validate(GenerationRequest(prompt="a", width=1000))


_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.lists(st.integers(), max_size=2), st.sampled_from(["256", "1e3", "nan", " 7 ", "best quality", "none"]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELD_NAMES + ("junk",)), _ANY, max_size=6))
def test_any_input_gives_a_valid_request_or_a_one_line_input_error(values):
    try:
        req = build_request(values)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    validate(req)  # what build_request returns always passes validation
    assert isinstance(req.width, int) and isinstance(req.prior_cfg, float)
    assert req.composed_prompt().strip()


# --- reference images (image remix) ---------------------------------------------------------------

REMIX = {**SMALL, "seed": 5}


@pytest.mark.parametrize("values, message", [
    ({"images": ["/nowhere/ref.png"]}, "reference image 'ref.png' does not exist"),
    ({"images": ["RED"], "image_strengths": 2.5}, "image strength must be between 0 and 2"),
    ({"images": ["RED"], "image_strengths": "nan"}, "image_strengths must be a finite number"),
    ({"images": ["RED", "RED"], "image_strengths": [1, 1, 1]}, "3 image strengths for 2 reference images"),
    ({"images": ["RED"] * (MAX_REFERENCES + 1)}, f"at most {MAX_REFERENCES}"),
    ({"images": [""]}, "must be a file path"),
])
def test_bad_references_are_refused_with_a_message(refs, values, message):
    values = {k: [str(refs["red"]) if v == "RED" else v for v in val] if k == "images" else val
              for k, val in values.items()}
    with pytest.raises(InputError, match=message):
        build_request({**REMIX, **values})


def test_presets_may_name_references_or_none(refs, tmp_path):
    store = PresetStore(user_dir=tmp_path / "presets")
    store.save("with-ref", build_request({**REMIX, "images": [str(refs["red"])], "image_strengths": 0.7}))
    store.save("plain", build_request(REMIX))
    saved = json.loads((tmp_path / "presets" / "plain.json").read_text())
    assert "images" not in saved and "image_strengths" not in saved
    request = store.request("with-ref")
    assert [(r.path, r.strength) for r in request.references] == [(str(refs["red"]), 0.7)]
