"""The LoRA picker as a person uses it: pick a LoRA of the folder and a weight, add it, generate; the image's
caption names it; a tag naming no LoRA here is flagged under the prompt; a file added later shows after ↻."""

from __future__ import annotations

import pytest
import torch
from playwright.sync_api import expect
from safetensors.torch import save_file
from support import generate_and_wait, make_studio, pick, set_number, small_settings


def _write(path, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    key = "lora_unet_down_blocks_0_2_attention_attn_to_q"
    save_file({key + ".lora_down.weight": torch.randn(4, 32, generator=generator),
               key + ".lora_up.weight": torch.randn(32, 4, generator=generator)}, str(path))


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    """The demo studio, with two LoRAs in the user folder's loras/ before the page is built."""
    folder = studio_home / "loras"
    folder.mkdir()
    _write(folder / "ink.safetensors", 1)
    _write(folder / "flat-color.safetensors", 2)
    return make_studio(tiny_pair, studio_home, demo=True)


def _open_box(page):
    page.locator("#lora_box").get_by_text("LoRA", exact=True).first.click()
    page.locator("#lora_add").wait_for()


def test_pick_a_lora_and_weight_add_it_and_the_image_names_it(page):
    _open_box(page)
    pick(page, "lora_name", "ink")
    set_number(page, "Weight", 0.8)
    page.locator("#lora_add").click()
    expect(page.locator("#loras")).to_contain_text("ink:0.8")
    # adding the same LoRA again at another weight replaces its entry
    set_number(page, "Weight", 0.5)
    page.locator("#lora_add").click()
    expect(page.locator("#loras")).to_contain_text("ink:0.5")
    expect(page.locator("#loras")).not_to_contain_text("ink:0.8")
    small_settings(page)
    generate_and_wait(page)
    thumb = page.locator("#gallery .grid-container .thumbnail-item .caption-label").first
    expect(thumb).to_contain_text("<lora:ink:0.5>")
    expect(page.locator("#status")).not_to_contain_text("error")


def test_a_tag_naming_no_lora_here_is_flagged_and_one_that_is_here_is_not(page):
    page.locator("#prompt textarea").fill("1girl, <lora:flat-color:0.7>, smile")
    expect(page.locator("#composed")).to_contain_text("sent:")
    expect(page.locator("#composed")).not_to_contain_text("LoRA")
    expect(page.locator("#composed")).not_to_contain_text("<lora")  # the tag is not encoded
    page.locator("#prompt textarea").fill("1girl, <lora:gone:1>, smile")
    expect(page.locator("#composed")).to_contain_text("<lora:gone:1>: no such LoRA in the loras folder")


def test_a_lora_added_while_the_page_is_open_shows_after_refresh(page, studio_home):
    _open_box(page)
    _write(studio_home / "loras" / "new-style.safetensors", 3)
    page.locator("#lora_refresh").click()
    pick(page, "lora_name", "new-style")
    page.locator("#lora_add").click()
    expect(page.locator("#loras")).to_contain_text("new-style:1")


def test_typing_lora_suggests_the_folders_loras_and_tab_inserts_the_tag(page):
    prompt = page.locator("#prompt textarea")
    prompt.click()
    prompt.press_sequentially("1girl, <lora:fl", delay=30)
    first = page.locator("#tag_suggestions .sote-suggestion").first
    first.wait_for(state="visible")
    assert first.locator(".sote-suggestion-text").inner_text() == "<lora:flat-color:1>"
    assert first.locator(".sote-suggestion-category").inner_text() == "lora"
    prompt.press("Tab")
    assert prompt.input_value() == "1girl, <lora:flat-color:1>, "
