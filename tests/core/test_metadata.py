"""A1111 'parameters' text and PNG files: written, read back, never overwritten."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sote_ui.core import tags
from sote_ui.core.errors import InputError
from sote_ui.core.metadata import (
    MAX_PARAMETERS_CHARS,
    ModelInfo,
    format_parameters,
    parse_pairs,
    parse_parameters,
    png_bytes,
    read_parameters,
    split_parameters,
)
from sote_ui.core.outputs import open_image, save_png, unique_path
from sote_ui.core.request import FIELD_NAMES, build_request

MODEL = ModelInfo("Disty0/sotediffusion-wuerstchen3", "Disty0/sotediffusion-wuerstchen3-alpha1-decoder", "fp8")


def _round_trip(request):
    text = format_parameters(request, request.seed, MODEL)
    values = parse_parameters(text)
    return build_request({k: v for k, v in values.items() if k in FIELD_NAMES}), values


REQUESTS = [
    {"prompt": "1girl, solo", "seed": 42},
    {"prompt": "1girl, solo, smile", "seed": 0, "width": 768, "height": 1280, "prior_steps": 30, "prior_cfg": 7.5,
     "decoder_steps": 12, "decoder_cfg": 1.2},
    {"prompt": "1girl", "aesthetic": "none", "quality": "none", "date": "none", "seed": 9, "negative_prompt": ""},
    {"prompt": "hatsune miku, (smile:1.2), [hat], kanzaki ranko \\(idolmaster\\)", "artist": "Some Artist",
     "custom": "anime wallpaper", "rating": "general", "date": "mid", "seed": 4294967295},
    {"prompt": "ratio 16:9, \"quoted\", a: b", "negative_prompt": "lowres, bad anatomy: 1.2, \"x\"", "seed": 5},
    {"prompt": "1girl", "count": 1, "seed": 3, "prior_cfg": 0.0, "decoder_cfg": 30.0},
]


@pytest.mark.parametrize("values", REQUESTS, ids=[str(i) for i in range(len(REQUESTS))])
def test_round_trip_gives_the_same_request(values):
    request = build_request(values)
    again, parsed = _round_trip(request)
    assert again == request
    assert again.composed_prompt() == request.composed_prompt()
    assert parsed["model"] == MODEL.prior and parsed["decoder"] == MODEL.decoder and parsed["mode"] == "fp8"


def test_a_picker_tag_typed_mid_prompt_stays_there():
    request = build_request({"prompt": "1girl, best quality, solo", "seed": 1})
    assert request.composed_prompt() == "very aesthetic, newest, 1girl, best quality, solo"
    again, parsed = _round_trip(request)
    assert parsed["prompt"] == "1girl, best quality, solo" and parsed["quality"] == tags.NONE
    assert again.composed_prompt() == request.composed_prompt()


def test_the_text_uses_a1111_keys():
    request = build_request({"prompt": "1girl", "seed": 7, "width": 256, "height": 384, "prior_steps": 3,
                             "prior_cfg": 6, "decoder_steps": 2, "decoder_cfg": 1.5})
    text = format_parameters(request, 7, MODEL, extra={"Version": "sote-studio 0.1.0"})
    lines = text.split("\n")
    assert lines[0] == request.composed_prompt()
    assert lines[1] == "Negative prompt: " + tags.DEFAULT_NEGATIVE
    pairs = parse_pairs(lines[2])
    assert pairs["Steps"] == "3" and pairs["CFG scale"] == "6" and pairs["Seed"] == "7"
    assert pairs["Size"] == "256x384" and pairs["Sampler"] == "DDPMWuerstchen"
    assert pairs["Decoder steps"] == "2" and pairs["Decoder CFG scale"] == "1.5"
    assert pairs["Version"] == "sote-studio 0.1.0"


def test_values_with_commas_are_quoted_and_come_back():
    model = ModelInfo("C:\\models\\sote, v2\\prior", "/models/dec,oder", "offload-fp8")
    note = 'say "hi", twice: ok'
    text = format_parameters(build_request({"prompt": "a", "seed": 1}), 1, model, extra={"Note": note})
    tail = text.split("\n")[-1]
    assert '"C:\\\\models\\\\sote, v2\\\\prior"' in tail  # JSON-quoted
    pairs = parse_pairs(tail)
    assert pairs["Note"] == note
    assert pairs["Model"] == model.prior and pairs["Decoder"] == model.decoder
    values = parse_parameters(text)
    assert values["model"] == model.prior and values["decoder"] == model.decoder
    assert values["seed"] == 1 and values["prior_steps"] == 40  # the pairs after them still parse


def test_another_tools_text_parses():
    text = ("masterpiece, 1girl\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, CFG scale: 7, Seed: 123, "
            "Size: 832x1216, Model hash: abc, Model: animagine")
    values = parse_parameters(text)
    assert values["prompt"] == "masterpiece, 1girl"
    assert values["negative_prompt"] == "lowres"
    assert (values["prior_steps"], values["prior_cfg"], values["seed"]) == (28, 7.0, 123)
    assert (values["width"], values["height"]) == (832, 1216)
    assert values["model"] == "animagine"
    assert "decoder_steps" not in values and "decoder" not in values
    assert all(values[k] == tags.NONE for k in ("aesthetic", "quality", "date", "custom", "rating"))
    # 832 is not a multiple of 128: using these settings is refused with a clear message
    with pytest.raises(InputError, match="width 832"):
        build_request({k: v for k, v in values.items() if k in FIELD_NAMES})


def test_other_stable_cascade_front_ends_names():
    text = "1girl\nSteps: 20, CFG scale: 4, Seed: 1, Refiner steps: 12, Secondary CFG scale: 1.1"
    values = parse_parameters(text)
    assert values["decoder_steps"] == 12 and values["decoder_cfg"] == 1.1
    assert values["negative_prompt"] == ""


def test_multiline_prompt_and_negative():
    prompt, negative, pairs = split_parameters("a,\nb\nNegative prompt: c\nd\nSteps: 3, Seed: 4")
    assert prompt == "a,\nb" and negative == "c\nd" and pairs == {"Steps": "3", "Seed": "4"}
    prompt, negative, pairs = split_parameters("just a prompt, with: a colon")
    assert prompt == "just a prompt, with: a colon" and negative == "" and pairs == {}


@pytest.mark.parametrize("text,match", [
    ("", "no generation parameters"),
    ("   \n ", "no generation parameters"),
    ("a\nSteps: many, Seed: 1", "Steps"),
    ("a\nSteps: 3, CFG scale: high, Seed: 1", "CFG scale"),
    ("a\nSteps: 3, Seed: 1, Size: big", "size"),
    ("a" * (MAX_PARAMETERS_CHARS + 1), "characters"),
])
def test_unreadable_text_is_an_input_error(text, match):
    with pytest.raises(InputError, match=match) as info:
        parse_parameters(text)
    assert "\n" not in str(info.value)


@settings(max_examples=150, deadline=None)
@given(
    user=st.lists(st.sampled_from(["1girl", "solo", "smile", "(blush:1.2)", "ratio 3:2", "best quality", "newest",
                                   "art by someone", "hat", "say \"hi\""]), max_size=5),
    negative=st.sampled_from(["", tags.DEFAULT_NEGATIVE, "lowres, text: 2", "a \"b\", c"]),
    picks=st.fixed_dictionaries({c: st.sampled_from((tags.NONE,) + v) for c, v in tags.CATEGORIES.items()}),
    artist=st.sampled_from(["", "someone", "An, Artist"]),
    seed=st.integers(0, 2**32 - 1),
    prior_cfg=st.sampled_from([0.0, 1.0, 4.5, 8.0, 12.25]),
    decoder_cfg=st.sampled_from([0.0, 1.0, 1.2, 2.0]),
)
def test_round_trip_keeps_the_composed_prompt(user, negative, picks, artist, seed, prior_cfg, decoder_cfg):
    """Reusing an image's settings must give the prompt that made it, else the image changes."""
    try:
        request = build_request({"prompt": ", ".join(user), "negative_prompt": negative, "artist": artist,
                                 "seed": seed, "prior_cfg": prior_cfg, "decoder_cfg": decoder_cfg, **picks})
    except InputError:
        return  # an empty prompt
    again, _ = _round_trip(request)
    assert again.composed_prompt() == request.composed_prompt()
    assert again.negative_prompt == request.negative_prompt
    assert replace(again, **{k: getattr(request, k) for k in ("prompt", "aesthetic", "quality", "date", "custom",
                                                            "rating", "artist")}) == request


# --- PNG files ------------------------------------------------------------------------


def _image(color=(10, 20, 30)):
    return Image.new("RGB", (32, 16), color)


def test_png_carries_the_parameters(tmp_path):
    request = build_request({"prompt": "1girl, smile", "seed": 11, "width": 256, "height": 256})
    text = format_parameters(request, 11, MODEL)
    path = save_png(_image(), text, tmp_path / "out" / "sote-11.png")
    assert path == tmp_path / "out" / "sote-11.png"
    with Image.open(path) as loaded:
        assert read_parameters(loaded) == text
        assert loaded.size == (32, 16)
    again = build_request({k: v for k, v in parse_parameters(read_parameters(open_image(path))).items()
                           if k in FIELD_NAMES})
    assert again == request


def test_save_never_overwrites(tmp_path):
    target = tmp_path / "name.png"
    first = save_png(_image((1, 2, 3)), "first\nSeed: 1", target)
    first_bytes = first.read_bytes()
    second = save_png(_image((4, 5, 6)), "second\nSeed: 2", target)
    third = save_png(_image((7, 8, 9)), "third\nSeed: 3", target)
    assert (first, second, third) == (target, tmp_path / "name-1.png", tmp_path / "name-2.png")
    assert first.read_bytes() == first_bytes
    with Image.open(second) as img:
        assert read_parameters(img) == "second\nSeed: 2"
        assert img.getpixel((0, 0)) == (4, 5, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["name-1.png", "name-2.png", "name.png"]  # no temp files
    assert unique_path(target) == tmp_path / "name-3.png"


def test_png_without_parameters_reads_none(tmp_path):
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    assert read_parameters(Image.open(io.BytesIO(buffer.getvalue()))) is None
    assert read_parameters(open_image(png_bytes(_image(), "x\nSeed: 1"))) == "x\nSeed: 1"


def test_open_image_refuses_what_it_cannot_read(tmp_path):
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    for source in (text_file, b"\x89PNG broken", tmp_path / "missing.png", tmp_path):
        with pytest.raises(InputError) as info:
            open_image(source)
        assert "\n" not in str(info.value)
    assert open_image(io.BytesIO(png_bytes(_image(), "a\nSeed: 1"))).size == (32, 16)


def test_settings_this_model_has_no_use_for_are_listed_not_dropped():
    text = ("1girl\nNegative prompt: lowres\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
            "Seed: 5, Size: 832x1216, Model hash: 1a2b, Model: animagine, Denoising strength: 0.4, Clip skip: 2, "
            "Hires upscale: 1.5, Hires steps: 10, Version: v1.9.4")
    values = parse_parameters(text)
    # The sampler and the hi-res fix apply now; a schedule other than ours and clip skip do not.
    assert values["not_applied"] == {"Schedule type": "Karras", "Clip skip": "2"}
    assert (values["prior_sampler"], values["hires_scale"], values["hires_steps"]) == ("dpmpp_2m", 1.5, 10)
    assert values["hires_denoise"] == 0.4 and "denoise" not in values  # txt2img's hi-res denoise
    assert values["prior_steps"] == 28 and values["seed"] == 5


def test_our_own_parameters_leave_nothing_unapplied(small):
    request = build_request(small)
    text = format_parameters(request, 7, ModelInfo("prior", "decoder", "bf16"),
                             extra={"Grid X": "prior_cfg: 2, 4", "Prior stopped at": "12/40"})
    assert "not_applied" not in parse_parameters(text)
