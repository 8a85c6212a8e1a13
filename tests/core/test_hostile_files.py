"""Hostile and unusual files: metadata that took quadratic time, absurd values, A1111 JPEG/WebP files,
preset files that broke the preset list, and temporary files left behind."""

from __future__ import annotations

import io
import json
import threading

import pytest
from PIL import Image

from sote_ui.core.errors import InputError
from sote_ui.core.metadata import parse_pairs, parse_parameters, read_parameters, split_parameters
from sote_ui.core.outputs import open_image
from sote_ui.core.presets import PresetStore

A1111 = ("1girl, solo, smile\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, CFG scale: 7, Seed: 1234, "
         "Size: 832x1216, Model: anything")


def _finishes(fn, *args, seconds: float = 10.0):
    """Run ``fn`` in a thread and return its result; fail if it is still running after ``seconds``
    (a hang guard: the quadratic parser took 29 s on 65 KB)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except Exception as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} was still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize("tail, expected", [
    ("a" * 65_000, {"Steps": "1"}),  # one long key-like run with no colon
    ("a." * 32_000 + ": 2", {"Steps": "1"}),  # runs of key characters broken by dots, then a colon
    ("x: " + "y" * 65_000, {"Steps": "1", "x": "y" * 65_000}),
    ('Prompt: "' + '\\"' * 32_000, {"Steps": "1"}),  # an unclosed quoted value full of escapes
    (":" * 65_000, {"Steps": "1"}),
    ("a " * 32_000 + "b: 3", {"Steps": "1", "a " * 31 + "b": "3"}),  # a key is at most 64 characters
])
def test_hostile_parameter_lines_parse_in_linear_time(tail, expected):
    line = "Steps: 1, " + tail
    pairs = _finishes(parse_pairs, line)
    for key, value in expected.items():
        assert pairs[key] == value
    prompt, negative, found = _finishes(split_parameters, "a prompt\n" + line)
    assert prompt == "a prompt" and found["Steps"] == "1"


def test_pairs_are_read_as_a1111_writes_them():
    pairs = parse_pairs('Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Lora hashes: "a: 1, b: 2", Seed: 3,'
                        ' Size: 832x1216, Hires upscale: 2, junk without colon, Model: x')
    assert pairs == {"Steps": "30", "Sampler": "DPM++ 2M", "CFG scale": "7.5", "Lora hashes": "a: 1, b: 2",
                     "Seed": "3", "Size": "832x1216", "Hires upscale": "2", "Model": "x"}


@pytest.mark.parametrize("pair, field", [
    ("Seed: 1e30", "'Seed'"), ("Seed: -5", "'Seed'"), ("Steps: inf", "'Steps'"), ("Steps: 1.5", "'Steps'"),
    ("Steps: 0", "'Steps'"), ("CFG scale: nan", "'CFG scale'"), ("CFG scale: -3", "'CFG scale'"),
    ("Decoder steps: 1e400", "'Decoder steps'"), ("Decoder CFG scale: inf", "'Decoder CFG scale'"),
    ("Size: 99999999999x2", "'Size'"),
])
def test_absurd_values_get_a_message_naming_the_field(pair, field):
    text = f"1girl\nSteps: 20, {pair}" if not pair.startswith("Steps") else f"1girl\n{pair}, Seed: 3"
    with pytest.raises(InputError) as info:
        parse_parameters(text)
    message = str(info.value)
    assert field in message and "\n" not in message


def test_sane_values_still_read():
    values = parse_parameters(A1111)
    assert (values["prior_steps"], values["prior_cfg"], values["seed"]) == (28, 7.0, 1234)
    assert (values["width"], values["height"]) == (832, 1216)


# --- A1111 JPEG and WebP: parameters in EXIF UserComment -----------------------------------------

def _with_user_comment(fmt: str, comment: bytes) -> bytes:
    image = Image.new("RGB", (64, 64), (200, 120, 40))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_a1111_jpeg_and_webp_parameters_are_read(fmt, encoding):
    data = _with_user_comment(fmt, b"UNICODE\x00" + A1111.encode(encoding))
    image = open_image(data)
    assert image.format == fmt
    text = read_parameters(image)
    assert text == A1111
    values = parse_parameters(text)
    assert values["seed"] == 1234 and values["prompt"].endswith("1girl, solo, smile")


def test_an_ascii_user_comment_is_read():
    image = open_image(_with_user_comment("JPEG", b"ASCII\x00\x00\x00" + A1111.encode()))
    assert read_parameters(image) == A1111


def test_a_jpeg_without_parameters_reads_none():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="JPEG")
    assert read_parameters(open_image(buffer.getvalue())) is None


# --- preset files that are too deep or too big ------------------------------------------------------

@pytest.mark.parametrize("content", [
    "[" * 30_000 + "]" * 30_000,
    '{"prior_steps": ' + "[" * 5_000 + "]" * 5_000 + "}",
    '{"a": ' * 6_000 + "1" + "}" * 6_000,
])
def test_a_deeply_nested_preset_is_skipped_and_the_others_still_work(tmp_path, content):
    user = tmp_path / "presets"
    user.mkdir()
    (user / "evil.json").write_text(content, encoding="utf-8")
    (user / "mine.json").write_text(json.dumps({"prior_steps": 12}), encoding="utf-8")
    store = PresetStore(user_dir=user)
    presets, errors = store.load()
    assert "mine" in presets and "evil" not in presets and "card-recommended" in presets
    assert len(errors) == 1 and errors[0].startswith("preset evil.json:") and "nested" in errors[0]
    assert store.request("mine").prior_steps == 12
    with pytest.raises(InputError, match="evil.json"):
        store.get("evil")
    saved = store.save("another", {"prior_steps": 5})
    assert saved.values == {"prior_steps": 5} and "another" in store.names()


def test_strings_with_brackets_do_not_count_as_nesting(tmp_path):
    user = tmp_path / "presets"
    user.mkdir()
    # `\{` is a literal brace: a bare `{` opens a wildcard choice {a|b}
    (user / "brackets.json").write_text(json.dumps({"prompt": "[" * 200 + "\\\"\\{" * 50, "description": "x"}))
    presets, errors = PresetStore(user_dir=user).load()
    assert errors == [] and presets["brackets"].values["prompt"].startswith("[[[")


def test_orphaned_temporary_preset_files_are_cleaned(tmp_path):
    user = tmp_path / "presets"
    user.mkdir()
    (user / "keep.json").write_text("{}")
    orphan = user / ".keep.json.abc123.tmp"
    orphan.write_text("{}")
    other = user / ".notes.txt"
    other.write_text("mine")
    removed = PresetStore(user_dir=user).clean_orphans()
    assert removed == [orphan.name]
    assert not orphan.exists() and other.exists() and (user / "keep.json").exists()
