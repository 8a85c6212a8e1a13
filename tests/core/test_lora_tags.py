"""LoRA in the vocabulary: ``<lora:name:w>`` tags come out of the encoded prompt and into the request, names
must be files of the loras folder, weights stay sane, and presets, PNG parameters and the fixer carry them."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from sote_ui.core import fixer, loras
from sote_ui.core.errors import InputError
from sote_ui.core.loras import LoraRef
from sote_ui.core.metadata import ModelInfo, format_parameters, parse_parameters
from sote_ui.core.presets import PresetStore
from sote_ui.core.request import build_request


def _safetensors(path, data: bytes, header: dict | None = None) -> None:
    """A minimal safetensors file: one uint8 tensor holding ``data``."""
    header = header or {"t": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.fixture
def lora_dir(tmp_path, monkeypatch):
    folder = tmp_path / "my-loras"
    (folder / "styles").mkdir(parents=True)
    _safetensors(folder / "ink.safetensors", b"ink weights")
    _safetensors(folder / "styles" / "flat color.safetensors", b"flat weights")
    (folder / "notes.txt").write_text("not a LoRA")
    monkeypatch.setenv("SOTE_LORA_DIR", str(folder))
    return folder


def test_the_folder_is_sote_lora_dir_else_loras_in_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SOTE_LORA_DIR", raising=False)
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path / "home"))
    assert loras.lora_dir() == tmp_path / "home" / "loras"
    assert loras.names() == []  # no folder yet: no LoRAs, no error
    monkeypatch.setenv("SOTE_LORA_DIR", str(tmp_path / "elsewhere"))
    assert loras.lora_dir() == tmp_path / "elsewhere"


def test_names_are_the_stems_of_safetensors_files_subfolders_included(lora_dir):
    assert loras.names() == ["flat color", "ink"]
    assert loras.find("flat color") == lora_dir / "styles" / "flat color.safetensors"
    with pytest.raises(InputError, match="LoRA 'inc' is not in the loras folder") as caught:
        loras.find("inc")
    assert str(lora_dir) not in str(caught.value)


@pytest.mark.parametrize("prompt, text, refs", [
    ("1girl, <lora:ink:0.7>, smile", "1girl, smile", [LoraRef("ink", 0.7)]),
    ("<lora:ink> 1girl", "1girl", [LoraRef("ink", 1.0)]),
    ("1girl, <LORA: ink : -0.5 : 0.25 >", "1girl", [LoraRef("ink", -0.5, 0.25)]),
    ("a, <lora:ink:1>, <lora:flat color:.5>, b", "a, b", [LoraRef("ink", 1.0), LoraRef("flat color", 0.5)]),
    ("(long hair:1.2), smile", "(long hair:1.2), smile", []),
])
def test_tags_leave_the_prompt_and_name_loras(prompt, text, refs):
    assert loras.split_tags(prompt) == (text, tuple(refs))


@pytest.mark.parametrize("text, message", [
    ("<lora:ink:lots>", "LoRA 'ink': weight 'lots' is not a number"),
    ("<lora:ink:9>", "LoRA 'ink': weight 9 is outside -4..4"),
    ("<lora:ink:1:-5>", "text encoder weight -5 is outside -4..4"),
    ("<lora:ink:nan>", "weight nan is outside"),
])
def test_bad_tag_weights_are_one_line_errors(text, message):
    with pytest.raises(InputError, match=message):
        loras.split_tags("1girl, " + text)


def test_the_request_encodes_the_prompt_without_tags_and_merges_them_with_the_picker(lora_dir):
    request = build_request({"prompt": "1girl, <lora:ink:0.6>, smile", "loras": ["flat color:0.5", "ink"]})
    assert request.composed_prompt().endswith("1girl, smile")
    assert "<lora" not in request.composed_prompt()
    # the tag's weight wins over the picker's for the same name; the prompt's LoRAs come first
    assert request.active_loras() == (LoraRef("ink", 0.6), LoraRef("flat color", 0.5))
    assert request.to_dict()["loras"] == ["flat color:0.5", "ink:1"]
    assert request.written_prompt().endswith("1girl, <lora:ink:0.6>, smile, <lora:flat color:0.5>")
    again = build_request(request.to_dict())
    assert again == request
    assert build_request({"loras": "ink:0.25, flat color"}).loras == (LoraRef("ink", 0.25), LoraRef("flat color"))
    assert build_request({"loras": ["ink:1:0"]}).loras[0].text_weight == 0.0


@pytest.mark.parametrize("values, message", [
    ({"prompt": "1girl, <lora:nope:1>"}, "LoRA 'nope' is not in the loras folder"),
    ({"loras": ["nope"]}, "LoRA 'nope' is not in the loras folder"),
    ({"loras": ["ink:5"]}, "LoRA 'ink': weight 5 is outside -4..4"),
    ({"loras": ["ink:-4.5"]}, "weight -4.5 is outside"),
    ({"loras": [":1"]}, "is not a LoRA"),
    ({"loras": ["a:1:2:3"]}, "is not a LoRA"),
    ({"loras": 7}, "loras must be a list"),
    ({"loras": [f"l{i}" for i in range(9)]}, "9 LoRAs; at most 8"),
])
def test_bad_loras_are_one_line_errors(lora_dir, values, message):
    with pytest.raises(InputError, match=message) as caught:
        build_request({"prompt": "1girl", **values})
    assert "\n" not in str(caught.value)


def test_prior_keys_count_the_loras(lora_dir):
    from sote_ui.core.request import decoder_only_difference

    plain = build_request({"prompt": "1girl"})
    assert not decoder_only_difference(plain, build_request({"prompt": "1girl", "loras": ["ink"]}))
    assert decoder_only_difference(plain, build_request({"prompt": "1girl", "decoder_steps": 3}))


def test_presets_carry_loras(lora_dir, tmp_path):
    store = PresetStore(shipped_dir=None, user_dir=tmp_path / "presets")
    request = build_request({"prompt": "1girl", "loras": ["ink:0.8", "flat color:0.3:0"]})
    store.save("with loras", request)
    assert json.loads((tmp_path / "presets" / "with loras.json").read_text())["loras"] == ["ink:0.8",
                                                                                          "flat color:0.3:0"]
    assert store.request("with loras").loras == (LoraRef("ink", 0.8), LoraRef("flat color", 0.3, 0.0))


def test_the_lora_hash_is_a1111s_addnet_sha256_of_the_tensor_data(lora_dir):
    path = lora_dir / "ink.safetensors"
    assert loras.addnet_hash(path) == hashlib.sha256(b"ink weights").hexdigest()
    assert loras.short_hash(path) == hashlib.sha256(b"ink weights").hexdigest()[:12]
    # new metadata in the header keeps the hash: the weights are the same
    _safetensors(path, b"ink weights", {"__metadata__": {"ss_output_name": "ink v2"},
                                        "t": {"dtype": "U8", "shape": [11], "data_offsets": [0, 11]}})
    assert loras.short_hash(path) == hashlib.sha256(b"ink weights").hexdigest()[:12]


def test_parameters_round_trip_the_tags_and_hashes_and_name_what_is_missing(lora_dir):
    request = build_request({"prompt": "1girl, <lora:ink:0.7>", "loras": ["flat color:0.4"], "seed": 3})
    ink, flat = loras.short_hash(lora_dir / "ink.safetensors"), loras.short_hash(
        lora_dir / "styles" / "flat color.safetensors")
    text = format_parameters(request, 3, ModelInfo("prior", "decoder"),
                             extra={"Lora hashes": loras.hashes_value([("ink", ink), ("flat color", flat)])})
    values = parse_parameters(text)
    assert values["lora_hashes"] == {"ink": ink, "flat color": flat}
    assert "not_applied" not in values
    restored = build_request({k: v for k, v in values.items() if k in ("prompt", "negative_prompt", "seed")})
    assert restored.active_loras() == request.active_loras()
    assert loras.missing_note(values["prompt"], values["lora_hashes"]) == ""
    (lora_dir / "ink.safetensors").unlink()
    _safetensors(lora_dir / "styles" / "flat color.safetensors", b"retrained")
    assert loras.missing_note(values["prompt"], values["lora_hashes"]) == (
        "missing here: LoRA ink; another version here (hash differs): LoRA flat color")


def test_the_fixer_leaves_loras_that_are_here_and_flags_the_rest(lora_dir):
    findings = fixer.analyze("1girl, <lora:ink:0.8>, <lora:gone:1>, <lyco:thing:1>, smile")
    flagged = {f.tag: f.message for f in findings if f.kind == "lora"}
    assert set(flagged) == {"<lora:gone:1>", "<lyco:thing:1>"}
    assert "no such LoRA in the loras folder" in flagged["<lora:gone:1>"]
    assert "not supported here" in flagged["<lyco:thing:1>"]
    assert fixer.fix_all("1girl, <lora:ink:0.8>, <lora:gone:1>, smile") == "1girl, <lora:ink:0.8>, smile"


def test_typing_a_lora_tag_suggests_the_folders_names(lora_dir):
    from sote_ui.core.suggestions import suggest_tags

    assert [s["text"] for s in suggest_tags("1girl, <lora")] == ["<lora:flat color:1>, ", "<lora:ink:1>, "]
    assert [s["tag"] for s in suggest_tags("1girl, <LoRA: in")] == ["ink"]
    assert [s["tag"] for s in suggest_tags("1girl, <lora:color")] == ["flat color"]  # inside a name too
    assert suggest_tags("1girl, <lora:zz") == []
    assert suggest_tags("1girl, long h")[0]["text"] == "long hair, "  # tags as before
