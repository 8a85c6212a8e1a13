"""Property-based tests: any input gives a result or a clear one-line error, never a crash."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from sote_ui.core import tags
from sote_ui.core.emphasis import MAX_WEIGHT, check_weights, explicit_weights, parse_emphasis, strip_emphasis
from sote_ui.core.errors import InputError
from sote_ui.core.metadata import ModelInfo, format_parameters, parse_parameters, read_parameters
from sote_ui.core.outputs import open_image
from sote_ui.core.request import build_request
from sote_ui.core.wildcards import has_template

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
prompt_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
bracket_soup = st.text(alphabet="()[]\\:,.0123456789 abc-", max_size=120)


@FAST
@given(st.one_of(prompt_text, bracket_soup))
def test_emphasis_never_crashes_and_keeps_weights_positive_and_finite(text):
    pieces = parse_emphasis(text)
    assert all(piece for piece, _ in pieces)
    assert all(weight == weight and abs(weight) < float("inf") for _, weight in pieces)
    # A prompt the request accepts never carries a negative weight; one that has a negative
    # explicit weight is refused with a message naming it.
    explicit = explicit_weights(text)
    if all(0 <= w <= MAX_WEIGHT for w in explicit):
        check_weights(text)
        assert all(weight >= 0 for _, weight in pieces)
    else:
        with pytest.raises(ValueError, match="weight must be between 0 and"):
            check_weights(text)
    # Adjacent pieces never share a weight (they are merged).
    assert all(a[1] != b[1] for a, b in zip(pieces, pieces[1:]))
    # Without brackets or escapes, the text passes through unchanged with weight 1.
    if not any(c in text for c in "()[]\\"):
        assert strip_emphasis(text) == text
        assert all(weight == 1.0 for _, weight in pieces)


@FAST
@given(bracket_soup)
def test_emphasis_keeps_every_plain_character(text):
    plain = strip_emphasis(text)
    # Only brackets, backslashes and weight suffixes can disappear.
    assert len(plain) <= len(text)
    assert set(plain) <= set(text)


choice = lambda values: st.sampled_from((tags.NONE,) + tuple(values))  # noqa: E731


@FAST
@given(prompt_text, choice(tags.AESTHETIC), choice(tags.QUALITY), choice(tags.DATE), choice(tags.CUSTOM),
       choice(tags.RATING), st.text(max_size=30))
def test_composer_orders_tags_and_round_trips(prompt, aesthetic, quality, date, custom, rating, artist):
    composed = tags.compose_prompt(prompt, aesthetic=aesthetic, quality=quality, date=date, custom=custom,
                                   rating=rating, artist=artist)
    picked = [t for t in (aesthetic, quality, date) if t != tags.NONE]
    got = tags.split_tags(composed)
    user = tags.split_tags(prompt)
    # Picked tags not already typed by the user come first, in the dataset's order.
    expected_front = [t for t in picked if t.lower() not in {u.lower() for u in user}]
    assert got[:len(expected_front)] == expected_front
    assert got[len(got) - len(user):] == user if user else True
    # Reading the prompt back (as "reuse settings" does) composes the same prompt again.
    back = tags.decompose_prompt(composed)
    assert tags.compose_prompt(**back) == ", ".join(got)


@FAST
@given(st.text(max_size=2000))
def test_metadata_parser_gives_values_or_a_clear_error(text):
    try:
        values = parse_parameters(text)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(values, dict)
    assert "prompt" in values and "negative_prompt" in values


@st.composite
def requests(draw):
    values = {
        "prompt": draw(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                               min_size=1, max_size=80)
               .filter(lambda t: t.strip(" ,") and not has_template(t))),  # templates: test_wildcards.py
        "negative_prompt": draw(st.text(alphabet="abc, ()xyz:1.", max_size=60)),
        "width": draw(st.sampled_from([128, 256, 1024, 1536])),
        "height": draw(st.sampled_from([128, 512, 1024, 1536])),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "prior_steps": draw(st.integers(1, 150)),
        "prior_cfg": draw(st.floats(0, 30).map(lambda f: round(f, 2))),
        "decoder_steps": draw(st.integers(1, 100)),
        "decoder_cfg": draw(st.floats(0, 30).map(lambda f: round(f, 2))),
        "aesthetic": draw(choice(tags.AESTHETIC)),
        "rating": draw(choice(tags.RATING)),
    }
    return build_request(values)


@FAST
@given(requests())
def test_metadata_round_trips_any_valid_request(request):
    text = format_parameters(request, request.seed, ModelInfo("Disty0/a, b", "x/y", "bf16"))
    values = parse_parameters(text)
    assert values["model"] == "Disty0/a, b"
    again = build_request({k: v for k, v in values.items() if k in request.to_dict()})
    assert again.composed_prompt() == tags.compose_prompt(request.composed_prompt())
    for key in ("width", "height", "seed", "prior_steps", "prior_cfg", "decoder_steps", "decoder_cfg"):
        assert getattr(again, key) == getattr(request, key), key
    assert again.negative_prompt == request.negative_prompt.strip()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096))
def test_uploads_of_any_bytes_open_or_fail_clearly(data):
    try:
        image = open_image(data)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert image.width > 0


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600))
def test_png_with_any_parameters_chunk_is_read_or_refused(chunk):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", chunk.decode("latin-1"), zip=bool(chunk[:1] == b"z"))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    text = read_parameters(open_image(buffer.getvalue()))
    try:
        values = parse_parameters(text or "")
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(values["prompt"], str)


def test_huge_metadata_chunk_is_refused_with_a_message():
    huge = "1girl, " * 20000
    with __import__("pytest").raises(InputError, match="limit"):
        parse_parameters(huge + "\nSteps: 20, Seed: 1")
