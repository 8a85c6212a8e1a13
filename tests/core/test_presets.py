"""Presets: shipped ones load, broken user files are skipped, saving is safe and atomic."""

from __future__ import annotations

import json

import pytest

from sote_ui.core.errors import InputError
from sote_ui.core.files import atomic_write
from sote_ui.core.presets import CURRENT, MAX_PRESET_BYTES, SHIPPED_DIR, PresetStore, check_name
from sote_ui.core.request import GenerationRequest, build_request

SHIPPED = {"card-recommended", "fast", "later-decoder-defaults", "secondary-cfg-1.2", "wallpaper"}


@pytest.fixture
def store(tmp_path):
    return PresetStore(SHIPPED_DIR, tmp_path / "user")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_shipped_presets_all_load():
    presets, errors = PresetStore(SHIPPED_DIR, None).load()
    assert errors == []
    assert set(presets) == SHIPPED
    for name, preset in presets.items():
        assert preset.shipped and preset.description
        on_disk = json.loads((SHIPPED_DIR / f"{name}.json").read_text())
        on_disk.pop("description")
        assert preset.values == on_disk
        request = build_request(preset.values)
        for key, value in on_disk.items():
            assert getattr(request, key) == value


def test_shipped_values():
    store = PresetStore(SHIPPED_DIR, None)
    card = store.request("card-recommended")
    assert (card.width, card.height, card.prior_steps, card.prior_cfg, card.decoder_steps, card.decoder_cfg) == \
        (1024, 1536, 40, 8.0, 10, 1.0)
    assert card.negative_prompt == GenerationRequest().negative_prompt
    assert store.request("secondary-cfg-1.2").differences(card) == {"decoder_cfg": (1.2, 1.0)}
    assert store.request("wallpaper").custom == "anime wallpaper"


def test_overrides_win_over_the_preset(store):
    request = store.request("fast", {"prompt": "1girl", "width": 256, "prior_steps": None})
    assert (request.prompt, request.width, request.height, request.prior_steps, request.decoder_steps) == \
        ("1girl", 256, 1536, 20, 8)
    with pytest.raises(InputError, match="width"):
        store.request("fast", {"width": 300})


def test_broken_user_files_are_reported_and_skipped(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "bad-json.json").write_text("{ not json")
    (user / "unknown-key.json").write_text(json.dumps({"sampler": "euler"}))
    (user / "bad-value.json").write_text(json.dumps({"width": 300}))
    (user / "not-object.json").write_text("[1, 2]")
    (user / "bad-description.json").write_text(json.dumps({"description": 5, "width": 256}))
    (user / "binary.json").write_bytes(b"\xff\xfe\x00")
    (user / "huge.json").write_text(json.dumps({"prompt": "x" * (MAX_PRESET_BYTES + 10)}))
    (user / "fast.json").write_text(json.dumps({"width": 256}))  # a shipped name
    (user / "good.json").write_text(json.dumps({"description": "mine", "width": 256, "height": 384}))
    (user / ".hidden.json").write_text("{ ignored")
    (user / "notes.txt").write_text("ignored")
    presets, errors = PresetStore(SHIPPED_DIR, user).load()
    assert set(presets) == SHIPPED | {"good"}
    assert presets["good"].values == {"width": 256, "height": 384} and not presets["good"].shipped
    assert presets["fast"].shipped and presets["fast"].values["width"] == 1024
    assert len(errors) == 8
    for name, hint in [("bad-json", "JSON"), ("unknown-key", "sampler"), ("bad-value", "width"),
                       ("not-object", "object"), ("bad-description", "description"), ("binary", "JSON"),
                       ("huge", "KB"), ("fast", "shipped")]:
        matching = [e for e in errors if e.startswith(f"preset {name}.json:")]
        assert len(matching) == 1 and hint in matching[0], (name, errors)
    assert all("\n" not in e for e in errors)
    store = PresetStore(SHIPPED_DIR, user)
    with pytest.raises(InputError, match="sampler"):
        store.get("unknown-key")  # asking for a broken preset says why it is broken
    with pytest.raises(InputError, match="known presets"):
        store.get("nothing-here")


def test_save_load_delete_round_trip(store):
    request = build_request({"prompt": "1girl, smile", "width": 768, "height": 1152, "prior_cfg": 6.5,
                             "decoder_cfg": 1.2, "artist": "someone", "seed": 99})
    saved = store.save("my look 1.0", request, description="for tests")
    assert saved.path == store.user_dir / "my look 1.0.json" and not saved.shipped
    assert saved.description == "for tests"
    assert "my look 1.0" in store.names()
    assert store.request("my look 1.0") == request
    assert json.loads(saved.path.read_text())["description"] == "for tests"
    store.delete("my look 1.0")
    assert not saved.path.exists()
    assert "my look 1.0" not in store.names()
    with pytest.raises(InputError, match="no user preset"):
        store.delete("my look 1.0")


def test_save_a_dict_keeps_only_request_keys(store):
    saved = store.save("partial", {"width": 256, "prior_steps": 5, "mode": "fp8"})
    assert saved.values == {"width": 256, "prior_steps": 5}
    with pytest.raises(InputError, match="width"):
        store.save("broken", {"width": 300})
    assert not (store.user_dir / "broken.json").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_names_cannot_be_saved_or_deleted(store, name):
    before = (SHIPPED_DIR / f"{name}.json").read_bytes()
    with pytest.raises(InputError, match="shipped"):
        store.save(name, GenerationRequest(prompt="a"))
    with pytest.raises(InputError, match="shipped"):
        store.save(name, GenerationRequest(prompt="a"), overwrite=True)
    with pytest.raises(InputError, match="shipped"):
        store.delete(name)
    assert (SHIPPED_DIR / f"{name}.json").read_bytes() == before
    assert not (store.user_dir / f"{name}.json").exists()


@pytest.mark.parametrize("name", ["a/b", "../evil", "..", "a..b", ".hidden", "", "   ", "x" * 65, "ends.",
                                  "back\\slash", CURRENT, "-dash-first", "new\nline", "nul\x00"])
def test_unsafe_names_are_refused(store, name, tmp_path):
    with pytest.raises(InputError) as info:
        store.save(name, GenerationRequest(prompt="a"))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        store.delete(name)
    with pytest.raises(InputError):
        check_name(name)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_good_names_pass():
    for name in ("my look", "v1.2", "A_b-c", "x" * 64, "  padded  "):
        assert check_name(name) == name.strip()


def test_existing_name_needs_overwrite(store):
    store.save("mine", {"width": 256})
    path = store.user_dir / "mine.json"
    before = path.read_bytes()
    with pytest.raises(InputError, match="exists"):
        store.save("mine", {"width": 512})
    assert path.read_bytes() == before
    store.save("mine", {"width": 512}, overwrite=True)
    assert json.loads(path.read_text()) == {"width": 512}
    assert _files(store.user_dir) == ["mine.json"]  # no temporary files left behind


def test_atomic_write(tmp_path):
    path = tmp_path / "file.json"
    atomic_write(path, b"one")
    assert path.read_bytes() == b"one"
    with pytest.raises(InputError, match="exists"):
        atomic_write(path, b"two")
    assert path.read_bytes() == b"one"
    atomic_write(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert _files(tmp_path) == ["file.json"]


def test_no_user_folder_means_no_saving():
    store = PresetStore(SHIPPED_DIR, None)
    with pytest.raises(InputError, match="turned off"):
        store.save("mine", {"width": 256})
