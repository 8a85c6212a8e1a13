"""LoRA from the command line (``--lora NAME[:W]``, ``<lora:...>`` in the prompt, ``loras``) and the API's
``loras`` key: the image changes, its settings name the LoRAs and their hashes, and they come back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sote_ui.core.loras import addnet_hash
from sote_ui.core.metadata import parse_parameters, read_parameters

FAST = ["--width", "256", "--height", "256", "--prior-steps", "2", "--decoder-steps", "2", "--seed", "9", "--quiet"]


def write_kohya(path: Path, seed: int) -> None:
    """A kohya-format LoRA for the tiny pair: two attention layers of the prior, one of the text encoder."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in ("lora_unet_down_blocks_0_2_attention_attn_to_q", "lora_unet_up_blocks_1_2_attention_attn_out_proj",
                "lora_unet_down_blocks_1_0_channelwise_0", "lora_te_text_model_encoder_layers_0_self_attn_v_proj"):
        rows = 128 if key.endswith("channelwise_0") else 32
        tensors[key + ".lora_down.weight"] = torch.randn(4, 32, generator=generator)
        tensors[key + ".lora_up.weight"] = torch.randn(rows, 4, generator=generator)
        tensors[key + ".alpha"] = torch.tensor(4.0)
    save_file(tensors, str(path))


@pytest.fixture
def lora_dir(tmp_path, monkeypatch):
    folder = tmp_path / "loras"
    folder.mkdir()
    write_kohya(folder / "ink.safetensors", 1)
    write_kohya(folder / "flat-color.safetensors", 2)
    monkeypatch.setenv("SOTE_LORA_DIR", str(folder))
    return folder


def _read(path):
    with Image.open(path) as image:
        return read_parameters(image), np.asarray(image.convert("RGB"))


def test_lora_flags_and_tags_change_the_image_and_are_recorded(cli, model_flags, lora_dir, tmp_path):
    code, out, err = cli("generate", "--prompt", "1girl, solo", "--out", str(tmp_path / "plain.png"), *FAST,
                         *model_flags)
    assert code == 0, err
    _, plain = _read(out.strip())
    code, out, err = cli("generate", "--prompt", "1girl, <lora:ink:0.8>, solo", "--lora", "flat-color:0.5",
                         "--out", str(tmp_path / "lora.png"), *FAST, *model_flags)
    assert code == 0, err
    text, adapted = _read(out.strip())
    assert np.abs(adapted.astype(int) - plain.astype(int)).mean() > 1.0
    assert text.splitlines()[0].endswith("1girl, <lora:ink:0.8>, solo, <lora:flat-color:0.5>")
    ink, flat = (addnet_hash(lora_dir / f"{name}.safetensors")[:12] for name in ("ink", "flat-color"))
    assert f'Lora hashes: "ink: {ink}, flat-color: {flat}"' in text
    assert parse_parameters(text)["lora_hashes"] == {"ink": ink, "flat-color": flat}
    # the image's settings bring both LoRAs back: the same pixels
    code, out, err = cli("generate", "--from-image", str(tmp_path / "lora.png"), "--out", str(tmp_path / "again.png"),
                         "--quiet", *model_flags)
    assert code == 0, err
    assert np.array_equal(_read(out.strip())[1], adapted)


@pytest.mark.parametrize("flags, message", [
    (["--lora", "nope"], "error: LoRA 'nope' is not in the loras folder"),
    (["--prompt", "1girl, <lora:nope:1>"], "error: LoRA 'nope' is not in the loras folder"),
    (["--lora", "ink:12"], "error: LoRA 'ink': weight 12 is outside -4..4"),
    (["--lora", "ink:much"], "error: LoRA 'ink': weight 'much' is not a number"),
])
def test_bad_loras_exit_2_with_one_line(cli, model_flags, lora_dir, tmp_path, flags, message):
    code, out, err = cli("generate", *(["--prompt", "1girl"] if "--prompt" not in flags else []), *flags, "--out",
                         str(tmp_path), *FAST, *model_flags)
    assert code == 2 and out == ""
    assert err.strip() == err.strip().splitlines()[0] and err.startswith(message), err


def test_an_image_whose_lora_is_missing_says_so(cli, model_flags, lora_dir, tmp_path):
    code, out, err = cli("generate", "--prompt", "1girl, <lora:ink:1>", "--out", str(tmp_path / "a.png"), *FAST,
                         *model_flags)
    assert code == 0, err
    (lora_dir / "ink.safetensors").unlink()
    code, out, err = cli("generate", "--from-image", str(tmp_path / "a.png"), "--out", str(tmp_path / "b.png"),
                         "--quiet", *model_flags)
    assert code == 2
    assert "note: missing here: LoRA ink" in err and "error: LoRA 'ink' is not in the loras folder" in err


def test_loras_lists_the_folder(cli, lora_dir):
    code, out, err = cli("loras")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["flat-color", "ink"]
    assert lines[1].split()[1] == addnet_hash(lora_dir / "ink.safetensors")[:12]
    assert "2 LoRA(s) in" in err


# The API: /generate's ``loras`` key --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_loras(studio_home):
    """LoRAs in the served user folder's loras/ (the default place when SOTE_LORA_DIR is not set)."""
    folder = studio_home / "loras"
    folder.mkdir(exist_ok=True)
    write_kohya(folder / "ink.safetensors", 1)
    return folder


def _api_generate(client, **values):
    from support import SMALL

    return client.predict(**{**SMALL, "seed": 31, "prior_steps": 2, "decoder_steps": 2, **values},
                          api_name="/generate")


def test_the_api_takes_loras_and_names_a_missing_one(api_loras, client, monkeypatch):
    monkeypatch.delenv("SOTE_LORA_DIR", raising=False)
    plain, _, _, _, _ = _api_generate(client, loras=[])
    adapted, summary, report, _, _ = _api_generate(client, loras=["ink:0.8"])
    assert report["seeds"] == [31]
    with Image.open(adapted[0]["image"]) as image:
        text = read_parameters(image)
        adapted_pixels = np.asarray(image.convert("RGB"))
    with Image.open(plain[0]["image"]) as image:
        plain_pixels = np.asarray(image.convert("RGB"))
    assert "<lora:ink:0.8>" in text.splitlines()[0]
    assert f'Lora hashes: "ink: {addnet_hash(api_loras / "ink.safetensors")[:12]}"' in text
    assert np.abs(adapted_pixels.astype(int) - plain_pixels.astype(int)).mean() > 1.0
    with pytest.raises(Exception) as info:
        _api_generate(client, loras=["gone:1"])
    assert str(info.value) == "LoRA 'gone' is not in the loras folder (put gone.safetensors there, or set SOTE_LORA_DIR)"
