"""Grids and comparisons without a model (sote_ui/service/compare.py): the order the cells' jobs run in,
the axis values typed by the user, and the labelled sheet the images are composed into."""

from __future__ import annotations

import pytest
from PIL import Image

from sote_ui.core.errors import InputError
from sote_ui.core.request import build_request
from sote_ui.service.compare import GRID_KEYS, compose_grid, grid_jobs, parse_values


def request(small, **values):
    return build_request({**small, **values})


def prior_key(r):
    return (r.prior_steps, r.prior_cfg, r.seed, r.width, r.height)


def runs_of(keys) -> int:
    """How many runs of equal consecutive keys the sequence has."""
    return sum(1 for i, key in enumerate(keys) if i == 0 or key != keys[i - 1])


# 1. Job order --------------------------------------------------------------------------


def test_grid_jobs_put_decoder_only_variations_next_to_their_prior(small):
    base = request(small, seed=5)
    # x varies the prior, y the decoder: the natural row-by-row order would alternate priors.
    jobs = grid_jobs(base, "prior_cfg", [2.0, 4.0, 6.0], "decoder_cfg", [1.0, 2.0])
    assert [(xi, yi) for xi, yi, _ in jobs] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    keys = [prior_key(r) for _, _, r in jobs]
    assert runs_of(keys) == len(set(keys)) == 3
    for xi, yi, r in jobs:
        assert r.prior_cfg == [2.0, 4.0, 6.0][xi]
        assert r.decoder_cfg == [1.0, 2.0][yi]
        assert r.count == 1


def test_grid_jobs_cover_every_cell_once_whatever_the_axes(small):
    base = request(small, seed=5)
    for x_key, x_values, y_key, y_values in (
        ("decoder_steps", [1, 2, 3], "prior_steps", [2, 3]),
        ("seed", [1, 2], "decoder_cfg", [1.0, 1.5, 2.0]),
        ("prior_cfg", [2.0, 4.0], None, []),
    ):
        jobs = grid_jobs(base, x_key, x_values, y_key, y_values)
        cells = [(xi, yi) for xi, yi, _ in jobs]
        rows = len(y_values) if y_key else 1
        assert sorted(cells) == [(x, y) for x in range(len(x_values)) for y in range(rows)]
        keys = [prior_key(r) for _, _, r in jobs]
        assert runs_of(keys) == len(set(keys))  # each prior's cells are one block


# 2. Composing images -------------------------------------------------------------------------


def solid(color, size):
    return Image.new("RGB", size, color)


def test_compose_grid_places_each_image_in_its_cell():
    colors = [["red", "green", "blue"], ["yellow", "cyan", "magenta"]]
    images = [[solid(c, (100, 60)) for c in row] for row in colors]
    sheet = compose_grid(images, ["a", "b", "c"], ["row one", "row two"])
    label_w = sheet.width - 3 * 100
    label_h = sheet.height - 2 * 60
    assert label_w > 0 and label_h > 0  # room for the row and column labels
    for yi, row in enumerate(colors):
        for xi, color in enumerate(row):
            center = (label_w + xi * 100 + 50, label_h + yi * 60 + 30)
            assert sheet.getpixel(center) == solid(color, (1, 1)).getpixel((0, 0))


def test_compose_grid_without_row_labels_has_no_left_margin():
    images = [[solid("red", (64, 64)), solid("blue", (64, 64))]]
    sheet = compose_grid(images, ["x1", "x2"], [""])
    assert sheet.width == 2 * 64
    assert sheet.height > 64


def test_compose_grid_scales_large_images_down_to_max_cell():
    images = [[solid("red", (1024, 512))], [solid("blue", (1024, 512))]]
    sheet = compose_grid(images, ["only"], ["", ""], max_cell=256)
    assert sheet.width == 256  # no row labels: exactly one scaled cell wide
    assert sheet.height - 2 * 128 > 0
    small_sheet = compose_grid([[solid("red", (128, 128))]], ["only"], [""], max_cell=256)
    assert small_sheet.width == 128  # never scaled up


def test_compose_grid_keeps_full_size_cells_and_shrinks_only_past_the_sheet_limit():
    from sote_ui.service.compare import MAX_SHEET_PIXELS

    cells = [[solid("red", (1024, 1536)), solid("blue", (1024, 1536))]]
    sheet = compose_grid(cells, ["a", "b"], [""])
    assert sheet.width == 2 * 1024 and sheet.height > 1536  # full size, with room for the labels
    huge = [[solid("red", (1024, 1536))] * 8 for _ in range(8)]  # 100 MP of cells
    big = compose_grid(huge, [str(i) for i in range(8)], [str(i) for i in range(8)])
    assert big.width * big.height <= MAX_SHEET_PIXELS * 1.1
    assert big.width < 8 * 1024


# 3. Axis values -------------------------------------------------------------------------------


def test_parse_values_converts_to_request_types():
    assert parse_values("prior_cfg", "4, 6,8.5") == [4.0, 6.0, 8.5]
    assert all(isinstance(v, float) for v in parse_values("decoder_cfg", "1, 2"))
    assert parse_values("decoder_steps", " 1 ,2,, 3 ") == [1, 2, 3]
    assert all(isinstance(v, int) for v in parse_values("width", "128, 256"))
    assert parse_values("seed", "0, 42") == [0, 42]


@pytest.mark.parametrize("key", ["prompt", "count", "negative_prompt", "steps", ""])
def test_parse_values_rejects_keys_that_are_not_grid_axes(key):
    assert key not in GRID_KEYS
    with pytest.raises(InputError, match="can't be a grid axis"):
        parse_values(key, "1, 2")


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("prior_steps", "4, six", "prior_steps must be a whole number"),
        ("prior_steps", "0", "prior_steps must be between 1"),
        ("decoder_steps", "2.5", "decoder_steps must be a whole number"),
        ("prior_cfg", "nan", "prior_cfg must be a finite number"),
        ("prior_cfg", "-1", "prior_cfg must be between 0"),
        ("width", "100", "width 100 is not a multiple of 128"),
        ("seed", "-5", "seed must be -1"),
        ("prior_cfg", " , ,", "give values for prior_cfg"),
        ("decoder_cfg", "", "give values for decoder_cfg"),
    ],
)
def test_parse_values_rejects_bad_values(key, text, message):
    with pytest.raises(InputError, match=message):
        parse_values(key, text)


# 4. Bounds: a huge axis is refused before anything is built -----------------------------------


def peak_bytes(call) -> tuple[int, Exception | None]:
    """Peak memory Python allocated while ``call`` ran, and what it raised."""
    import tracemalloc

    tracemalloc.start()
    raised = None
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the caller checks what was raised
        raised = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, raised


def test_prompt_search_and_replace_refuses_a_prompt_past_the_limit_without_building_it(small):
    # A prompt naming the searched term ~2,600 times, and twenty 1,000-character replacements:
    # each replaced prompt would be ~2.6 MB (52 MB for the axis) before any length check.
    base = request(small, prompt="x, " * 2600)
    text = ", ".join(["x"] + [chr(ord("a") + i % 26) * 1000 for i in range(20)])
    peak, raised = peak_bytes(lambda: parse_values("prompt_sr", text, base=base))
    assert isinstance(raised, InputError)
    assert "characters" in str(raised) and "8000" in str(raised)
    assert peak < 2_000_000


def test_an_axis_with_more_values_than_grid_cells_is_refused_before_any_is_checked(small, monkeypatch):
    import sote_ui.service.compare as compare_module

    checked = []
    monkeypatch.setattr(compare_module, "build_request",
                        lambda *a, **k: checked.append(1) or build_request(*a, **k))
    with pytest.raises(InputError, match="Seed has 10000 values; a grid has at most 64 cells"):
        parse_values("seed", ", ".join(str(n) for n in range(10_000)), base=request(small))
    with pytest.raises(InputError, match="Seed values are 688888 characters long; the limit is 520065"):
        parse_values("seed", ", ".join(str(n) for n in range(100_000)), base=request(small))
    assert checked == []


def test_two_axes_whose_product_passes_the_cell_limit_are_refused_before_any_value_is_checked(small, monkeypatch):
    import sote_ui.service.compare as compare_module

    checked = []
    monkeypatch.setattr(compare_module, "build_request",
                        lambda *a, **k: checked.append(1) or build_request(*a, **k))
    with pytest.raises(InputError, match="10 x 10 = 100 cells.*limit is 64"):
        compare_module.check_grid_size("seed", ", ".join(map(str, range(10))),
                                       "prior_steps", ", ".join(map(str, range(1, 11))))
    compare_module.check_grid_size("seed", "1, 2", "prior_steps", "1, 2, 3")  # 6 cells pass
    assert checked == []
