"""Emphasis syntax: parsing and checking the weights (pure logic; its effect on the embeddings and the
image is in tests/engine/test_emphasis_weights.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sote_ui.core.emphasis import DOWN, UP, parse_emphasis, strip_emphasis
from sote_ui.core.errors import InputError
from sote_ui.core.request import build_request


def _approx(pieces):
    return [(text, pytest.approx(weight)) for text, weight in pieces]


def test_docstring_example():
    assert parse_emphasis("1girl, (smile:1.3), [hat]") == _approx(
        [("1girl, ", 1.0), ("smile", 1.3), (", ", 1.0), ("hat", 1 / 1.1)])


@pytest.mark.parametrize("text,expected", [
    ("plain tags, 1girl", [("plain tags, 1girl", 1.0)]),
    ("(tag)", [("tag", UP)]),
    ("((tag))", [("tag", UP * UP)]),
    ("[tag]", [("tag", DOWN)]),
    ("[[tag]]", [("tag", DOWN * DOWN)]),
    ("(tag:1.3)", [("tag", 1.3)]),
    ("( tag : 0.5 )", [(" tag ", 0.5)]),
    ("(tag:.5)", [("tag", 0.5)]),
    ("(a (b:1.5) c)", [("a ", UP), ("b", 1.5 * UP), (" c", UP)]),
    ("[a (b) c]", [("a ", DOWN), ("b", UP * DOWN), (" c", DOWN)]),
    ("((a:2) b:0.5)", [("a", 1.0), (" b", 0.5)]),
    ("kanzaki ranko \\(idolmaster\\)", [("kanzaki ranko (idolmaster)", 1.0)]),
    ("\\[x\\] \\\\", [("[x] \\", 1.0)]),
    ("(kanzaki ranko \\(idolmaster\\):1.2)", [("kanzaki ranko (idolmaster)", 1.2)]),
    # unbalanced brackets: an unclosed one runs to the end, a stray closing one is text
    ("a, (b, c", [("a, ", 1.0), ("b, c", UP)]),
    ("a, [b", [("a, ", 1.0), ("b", DOWN)]),
    ("a) b", [("a) b", 1.0)]),
    ("a] b", [("a] b", 1.0)]),
    ("tag:1.3)", [("tag:1.3)", 1.0)]),
    ("(a:1.2", [("a:1.2", UP)]),
    ("a: b, ratio 16:9", [("a: b, ratio 16:9", 1.0)]),
    ("trailing \\", [("trailing \\", 1.0)]),
    ("()", []),
    ("", []),
])
def test_parse(text, expected):
    assert parse_emphasis(text) == _approx(expected)


def test_strip_emphasis():
    assert strip_emphasis("1girl, (smile:1.3), [hat], ((blush))") == "1girl, smile, hat, blush"
    assert strip_emphasis("kanzaki ranko \\(idolmaster\\)") == "kanzaki ranko (idolmaster)"
    assert strip_emphasis("a) (b") == "a) b"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab ,()[]:\\.15-+\n", max_size=40))
def test_any_text_parses(text):
    pieces = parse_emphasis(text)
    assert all(piece and isinstance(weight, float) for piece, weight in pieces)
    # adjacent pieces never share a weight (they are merged)
    assert all(a[1] != b[1] for a, b in zip(pieces, pieces[1:]))
    stripped = strip_emphasis(text)
    assert len(stripped) <= len(text)
    # the letters survive in order: emphasis only removes syntax
    assert [c for c in stripped if c in "ab"] == [c for c in text if c in "ab"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="()[]\\:"), max_size=60))
def test_text_without_syntax_is_unchanged(text):
    assert strip_emphasis(text) == text
    assert all(weight == 1.0 for _, weight in parse_emphasis(text))


def test_negative_weights_are_refused_with_a_message():
    with pytest.raises(InputError, match="weight -1.*between 0 and 5"):
        build_request({"prompt": "1girl, (smile:-1)"})
    with pytest.raises(InputError, match="negative prompt has the weight 9"):
        build_request({"prompt": "1girl", "negative_prompt": "(lowres:9)"})
    assert build_request({"prompt": "1girl, (smile:0), ((hat:2):2)"}).prompt.startswith("1girl")
