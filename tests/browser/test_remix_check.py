"""Adding a reference image checks the image encoder at once: offline, with no encoder in the prior
folder and none cached, the page says so before any Generate."""

from __future__ import annotations

from PIL import Image


def test_adding_an_image_says_at_once_when_the_encoder_cannot_be_had(page, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    picture = tmp_path / "pink.png"
    Image.new("RGB", (80, 80), (250, 180, 200)).save(picture)
    page.get_by_text("Image remix: steer the composition").click()
    page.locator("#remix_image_1 input[type=file]").set_input_files(str(picture))
    note = page.locator("#remix_note").filter(has_text="needs the image encoder")
    note.wait_for(timeout=60_000)
    assert note.inner_text().startswith("⚠️") and "HF_HUB_OFFLINE" in note.inner_text()
    assert page.locator("#status").inner_text().find("image encoder") == -1  # nothing was generated

