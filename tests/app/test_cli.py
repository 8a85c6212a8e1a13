"""The command line, in-process (sote_ui.cli.main) and as a real ``python -m sote_ui`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import ROOT

from sote_ui.cli import build_parser
from sote_ui.core.metadata import parse_parameters, read_parameters

FAST = ["--width", "256", "--height", "256", "--prior-steps", "2", "--decoder-steps", "2", "--quiet"]


def _settings(path):
    with Image.open(path) as image:
        return parse_parameters(read_parameters(image)), np.asarray(image.convert("RGB"))


def _only_error_line(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_generate_writes_a_png_with_its_settings(cli, model_flags, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("generate", "--prompt", "1girl, solo", "--seed", "7", "--out", str(out),
                            *FAST, *model_flags)
    assert code == 0, err
    path = Path(stdout.strip())
    assert path == out / "sote-7.png" and path.is_file()
    values, pixels = _settings(path)
    assert values["seed"] == 7 and (values["width"], values["height"]) == (256, 256)
    assert values["prompt"] == "1girl, solo" and values["quality"] == "best quality"
    assert values["prior_steps"] == 2 and values["mode"] == "fp32"
    assert pixels.shape == (256, 256, 3)
    # the same command again never overwrites: it writes the next free name
    code, stdout, _ = cli("generate", "--prompt", "1girl, solo", "--seed", "7", "--out", str(out), *FAST,
                          *model_flags)
    assert code == 0 and Path(stdout.strip()) == out / "sote-7-1.png"
    assert np.array_equal(_settings(out / "sote-7-1.png")[1], pixels)


def test_prompt_padding_flag_reaches_the_image_and_its_settings(cli, model_flags, tmp_path):
    runs = {}
    for padding in ("unmasked", "masked"):
        out = tmp_path / f"{padding}.png"
        code, stdout, err = cli("generate", "--prompt", "1girl, solo", "--seed", "7", "--prior-cfg", "4",
                                "--prompt-padding", padding, "--out", str(out), *FAST, *model_flags)
        assert code == 0, err
        runs[padding] = _settings(Path(stdout.strip()))
    assert runs["unmasked"][0]["prompt_padding"] == "unmasked" and runs["masked"][0]["prompt_padding"] == "masked"
    assert not np.array_equal(runs["unmasked"][1], runs["masked"][1])
    code, _, err = cli("generate", "--prompt", "1girl", "--prompt-padding", "sideways", "--out",
                       str(tmp_path / "x.png"), *FAST, *model_flags)
    assert code == 2
    assert _only_error_line(err) == "error: prompt_padding must be unmasked or masked, got 'sideways'"


def test_count_writes_consecutive_seeds(cli, model_flags, tmp_path):
    code, stdout, err = cli("generate", "--prompt", "1girl", "--seed", "100", "--count", "2", "--out",
                            str(tmp_path / "run.png"), *FAST, *model_flags)
    assert code == 0, err
    paths = [Path(line) for line in stdout.split()]
    assert paths == [tmp_path / "run-100.png", tmp_path / "run-101.png"]
    (first, a), (second, b) = _settings(paths[0]), _settings(paths[1])
    assert (first["seed"], second["seed"]) == (100, 101)
    assert not np.array_equal(a, b)


def test_a_single_png_name(cli, model_flags, tmp_path):
    code, stdout, _ = cli("generate", "--prompt", "1girl", "--seed", "1", "--out", str(tmp_path / "one.png"),
                          *FAST, *model_flags)
    assert code == 0 and Path(stdout.strip()) == tmp_path / "one.png"


def test_progress_goes_to_stderr(cli, model_flags, tmp_path):
    flags = [f for f in FAST if f != "--quiet"]
    code, stdout, err = cli("generate", "--prompt", "1girl", "--seed", "1", "--out", str(tmp_path), *flags,
                            *model_flags)
    assert code == 0
    assert "decoder 2/2" in err and "[4/4]" in err and "ready" in err
    assert stdout.strip() == str(tmp_path / "sote-1.png")


def test_a_preset_with_flags_over_it(cli, model_flags, tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "mine.json").write_text(json.dumps({"width": 384, "height": 256, "prior_steps": 2,
                                                   "decoder_steps": 2, "prior_cfg": 5.5, "decoder_cfg": 1.5,
                                                   "quality": "high quality"}))
    code, stdout, err = cli("generate", "--preset", "mine", "--presets-dir", str(presets), "--prompt", "1girl",
                            "--seed", "3", "--decoder-cfg", "2.5", "--quality", "none", "--out", str(tmp_path),
                            "--quiet", *model_flags)
    assert code == 0, err
    values, pixels = _settings(stdout.strip())
    assert (values["width"], values["height"], values["prior_cfg"]) == (384, 256, 5.5)  # from the preset
    assert values["decoder_cfg"] == 2.5 and values["quality"] == "none"  # flags win
    assert pixels.shape == (256, 384, 3)


def test_a_shipped_preset(cli, model_flags, tmp_path):
    code, stdout, err = cli("generate", "--preset", "later-decoder-defaults", "--prompt", "1girl", "--seed", "4",
                            "--out", str(tmp_path), *FAST, *model_flags)
    assert code == 0, err
    values, _ = _settings(stdout.strip())
    assert (values["prior_cfg"], values["decoder_cfg"]) == (7.0, 2.0)
    assert (values["width"], values["prior_steps"]) == (256, 2)


def test_from_image_reuses_the_settings_and_redraws_the_image(cli, model_flags, tmp_path):
    # a picker tag typed mid-prompt, emphasis and a non-default negative: all must come back
    code, stdout, err = cli("generate", "--prompt", "1girl, best quality, (smile:1.2)", "--negative-prompt",
                            "lowres, text: 1", "--artist", "someone", "--rating", "general", "--prior-cfg", "6",
                            "--decoder-cfg", "1.5", "--seed", "21", "--out", str(tmp_path / "a.png"), *FAST,
                            *model_flags)
    assert code == 0, err
    original, original_pixels = _settings(stdout.strip())
    code, stdout, err = cli("generate", "--from-image", str(tmp_path / "a.png"), "--out", str(tmp_path / "b.png"),
                            "--quiet", *model_flags)
    assert code == 0, err
    again, again_pixels = _settings(stdout.strip())
    assert again == original
    assert np.array_equal(again_pixels, original_pixels)
    # flags still win over the image's settings
    code, stdout, _ = cli("generate", "--from-image", str(tmp_path / "a.png"), "--seed", "22", "--out",
                          str(tmp_path / "c.png"), "--quiet", *model_flags)
    changed, changed_pixels = _settings(stdout.strip())
    assert changed["seed"] == 22 and changed["prior_cfg"] == 6.0
    assert not np.array_equal(changed_pixels, original_pixels)


def test_info_prints_json(cli, model_flags, tmp_path):
    code, stdout, _ = cli("generate", "--prompt", "1girl", "--seed", "5", "--out", str(tmp_path), *FAST,
                          *model_flags)
    code, stdout, err = cli("info", stdout.strip())
    assert code == 0, err
    values = json.loads(stdout)
    assert values["seed"] == 5 and values["prompt"] == "1girl" and values["width"] == 256
    assert values["decoder_steps"] == 2


def test_presets_lists_shipped_and_user_presets(cli, tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "mine.json").write_text(json.dumps({"description": "my own", "width": 256}))
    (presets / "broken.json").write_text("{")
    code, stdout, err = cli("presets", "--presets-dir", str(presets))
    assert code == 0
    rows = {line.split()[0]: line for line in stdout.splitlines()}
    assert {"card-recommended", "fast", "later-decoder-defaults", "secondary-cfg-1.2", "wallpaper",
            "mine"} == set(rows)
    assert "shipped" in rows["fast"] and "user" in rows["mine"] and "my own" in rows["mine"]
    assert err.startswith("skipped: preset broken.json:")


def test_make_tiny(cli, tmp_path):
    code, stdout, _ = cli("make-tiny", str(tmp_path / "tiny"))
    assert code == 0
    assert stdout.split() == ["--prior", str(tmp_path / "tiny" / "prior"), "--decoder", str(tmp_path / "tiny" /
                                                                                            "decoder")]
    assert (tmp_path / "tiny" / "prior" / "model_index.json").is_file()


def _not_a_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    return str(path)


def _png_without_settings(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    return str(path)


BAD = [
    (["--width", "300"], "width 300"),
    (["--height", "abc"], "height"),
    (["--prior-cfg", "nan"], "prior_cfg"),
    (["--decoder-cfg", "-1"], "decoder_cfg"),
    (["--prior-steps", "0"], "prior_steps"),
    (["--count", "0"], "count"),
    (["--seed", "-5"], "seed"),
    (["--aesthetic", "gorgeous"], "aesthetic"),
    (["--prompt", "", "--aesthetic", "none", "--quality", "none", "--date", "none"], "prompt is empty"),
    (["--prompt", "x" * 9000], "prompt"),
    (["--preset", "no-such-preset"], "unknown preset"),
    (["--from-image", "{missing}"], "missing.png"),
    (["--from-image", "{not_png}"], "not an image"),
    (["--from-image", "{plain_png}"], "carries no generation settings"),
    (["--prior", "/no/such/prior", "--decoder", "/no/such/decoder"], "does not exist"),
    (["--model", "./no-such-model"], "does not exist"),
    (["--mode", "turbo"], "unknown memory mode"),
    (["--mode", "offload-bf16", "--device", "cpu"], "no GPU"),
    (["--device", "tpu"], "unknown device"),
    (["--bogus-flag"], "unrecognized arguments"),
]


@pytest.mark.parametrize("flags,expected", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_input_exits_2_with_one_error_line(cli, tiny_pair, tmp_path, flags, expected):
    prior, decoder = tiny_pair
    fill = {"{missing}": str(tmp_path / "missing.png"), "{not_png}": _not_a_png(tmp_path),
            "{plain_png}": _png_without_settings(tmp_path)}
    flags = [fill.get(f, f) for f in flags]
    model = [] if any(f in flags for f in ("--prior", "--model")) else ["--prior", str(prior), "--decoder",
                                                                        str(decoder)]
    argv = ["generate", "--prompt", "1girl", "--seed", "1", "--out", str(tmp_path / "out"), *FAST, *model]
    if "--mode" not in flags:
        argv += ["--mode", "fp32"]
    code, stdout, err = cli(*argv, *flags)
    assert code == 2
    line = _only_error_line(err)
    assert expected in line
    assert not (tmp_path / "out").exists()  # nothing was written


def test_info_of_a_bad_file(cli, tmp_path):
    for path in (_not_a_png(tmp_path), _png_without_settings(tmp_path), str(tmp_path / "none.png")):
        code, stdout, err = cli("info", path)
        assert code == 2 and stdout == ""
        _only_error_line(err)


def test_no_command_prints_help(cli):
    code, stdout, _ = cli()
    assert code == 2 and "generate" in stdout and "presets" in stdout


# --- as a real process ----------------------------------------------------------------------


def _run(*argv: str, home: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sote_ui", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_process_generate_and_info(model_flags, tmp_path):
    done = _run("generate", "--prompt", "1girl, solo", "--seed", "11", "--count", "2", "--out", str(tmp_path),
                *FAST, *model_flags, home=tmp_path)
    assert done.returncode == 0, done.stderr
    paths = [Path(p) for p in done.stdout.split()]
    assert paths == [tmp_path / "sote-11.png", tmp_path / "sote-12.png"]
    info = _run("info", str(paths[1]), home=tmp_path)
    assert info.returncode == 0 and json.loads(info.stdout)["seed"] == 12


@pytest.mark.parametrize("argv,expected", [
    (["generate", "--prompt", "1girl", "--width", "300"], "error: width 300 is not a multiple of 128"),
    (["generate", "--prompt", "1girl", "--prior", "/no/such/prior", "--decoder", "/no/such/decoder"],
     "does not exist"),
    (["generate", "--nope"], "unrecognized arguments"),
    (["info", "/no/such/image.png"], "is not a file"),
])
def test_process_bad_input(tmp_path, argv, expected):
    done = _run(*argv, home=tmp_path)
    assert done.returncode == 2
    assert expected in _only_error_line(done.stderr)
    assert done.stdout == ""


def test_process_presets(tmp_path):
    done = _run("presets", "--presets-dir", str(tmp_path / "none"), home=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert [line.split()[0] for line in done.stdout.splitlines()] == [
        "card-recommended", "fast", "later-decoder-defaults", "secondary-cfg-1.2", "wallpaper"]


def test_full_builder_is_reachable_from_the_cli():
    args = build_parser().parse_args(["make-tiny", "--full", "somewhere"])
    assert args.full and args.folder == "somewhere"
    assert build_parser().parse_args(["make-tiny", "x"]).full is False
