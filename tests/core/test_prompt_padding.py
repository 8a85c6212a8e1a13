"""The ``prompt_padding`` setting (how the text encoder sees a chunk's padding) and ``BREAK`` in prompts,
through the request, PNG metadata, presets and the command line."""

from __future__ import annotations

import json

import pytest

from sote_ui.cli import build_parser
from sote_ui.core.errors import InputError
from sote_ui.core.metadata import ModelInfo, format_parameters, parse_parameters, split_parameters
from sote_ui.core.presets import PresetStore
from sote_ui.core.request import (
    FIELD_NAMES,
    PRIOR_KEYS,
    PROMPT_PADDINGS,
    GenerationRequest,
    build_request,
    decoder_only_difference,
    validate,
)

MODEL = ModelInfo("Disty0/sotediffusion-wuerstchen3", "Disty0/sotediffusion-wuerstchen3-alpha1-decoder")


def _round_trip(request: GenerationRequest) -> tuple[GenerationRequest, dict]:
    values = parse_parameters(format_parameters(request, request.seed, MODEL))
    return build_request({k: v for k, v in values.items() if k in FIELD_NAMES}), values


def test_the_default_is_the_unmasked_padding_the_model_was_trained_with():
    assert PROMPT_PADDINGS == ("unmasked", "masked")
    assert GenerationRequest().prompt_padding == "unmasked"
    assert build_request({"prompt": "1girl"}).prompt_padding == "unmasked"
    assert build_request({"prompt": "1girl", "prompt_padding": " Masked "}).prompt_padding == "masked"


@pytest.mark.parametrize("value", ["mask", "", "true", 1, ["masked"]])
def test_an_unknown_padding_is_a_one_line_input_error(value):
    with pytest.raises(InputError) as info:
        build_request({"prompt": "1girl", "prompt_padding": value})
    assert str(info.value).startswith("prompt_padding must be unmasked or masked, got ")
    assert "\n" not in str(info.value)


def test_validate_refuses_a_request_built_by_hand_with_an_unknown_padding():
    with pytest.raises(InputError, match="prompt_padding must be unmasked or masked, got 'off'"):
        validate(GenerationRequest(prompt="1girl", prompt_padding="off"))


def test_padding_decides_the_prior_so_it_is_not_a_decoder_only_change():
    assert "prompt_padding" in PRIOR_KEYS and "prompt_padding" in FIELD_NAMES
    a = build_request({"prompt": "1girl", "seed": 1})
    b = build_request({"prompt": "1girl", "seed": 1, "prompt_padding": "masked"})
    assert a.differences(b) == {"prompt_padding": ("unmasked", "masked")}
    assert not decoder_only_difference(a, b)


@pytest.mark.parametrize("padding", PROMPT_PADDINGS)
def test_padding_is_written_to_png_metadata_and_read_back(padding):
    request = build_request({"prompt": "1girl, solo", "seed": 42, "prompt_padding": padding})
    text = format_parameters(request, request.seed, MODEL)
    assert split_parameters(text)[2]["Prompt padding"] == padding
    again, values = _round_trip(request)
    assert values["prompt_padding"] == padding
    assert again == request


def test_an_image_without_the_key_leaves_the_default():
    values = parse_parameters("1girl\nSteps: 20, CFG scale: 4, Seed: 1")
    assert "prompt_padding" not in values
    assert build_request({k: v for k, v in values.items() if k in FIELD_NAMES}).prompt_padding == "unmasked"


def test_an_image_with_an_unknown_padding_is_a_one_line_input_error():
    with pytest.raises(InputError, match="the image's 'Prompt padding' value 'sideways' is not unmasked or masked"):
        parse_parameters("1girl\nSteps: 20, Seed: 1, Prompt padding: sideways")


def test_a_preset_can_carry_the_padding(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "card-script.json").write_text(json.dumps({"description": "as the card's diffusers script",
                                                       "prompt_padding": "masked"}), encoding="utf-8")
    store = PresetStore(None, user)
    assert store.request("card-script").prompt_padding == "masked"


def test_the_command_line_flag_has_the_fields_name():
    args = build_parser().parse_args(["generate", "--prompt", "1girl", "--prompt-padding", "masked"])
    assert args.prompt_padding == "masked"
    assert build_parser().parse_args(["generate", "--prompt", "1girl"]).prompt_padding is None


# --- BREAK --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["1girl, smile BREAK hat, sky", "1girl, smile, BREAK, hat", "1girl\nBREAK\nhat",
                                    "BREAK 1girl, (smile BREAK hat:1.2)"])
def test_break_survives_the_png_metadata_round_trip(prompt):
    request = build_request({"prompt": prompt, "seed": 7})
    assert "BREAK" in request.composed_prompt()
    again, _ = _round_trip(request)
    # the same text is sent (line breaks in a prompt are written as commas, as for any tag)
    assert again.composed_prompt() == request.composed_prompt()
    assert again.prompt.count("BREAK") == prompt.count("BREAK")
