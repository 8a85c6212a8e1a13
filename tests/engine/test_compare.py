"""A/B comparison and two-stage-aware grids (sote_ui/compare.py) on the real tiny pipelines.

The shared ``engine`` caches prior outputs across tests, so every test that
counts prior runs uses seeds no other test uses.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from sote_ui.core.errors import InputError
from sote_ui.core.metadata import split_parameters
from sote_ui.core.request import build_request
from sote_ui.service.compare import GRID_KEYS, MAX_GRID_CELLS, compare, compose_grid, grid_jobs, parse_values, run_grid


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


# 2. Grids -------------------------------------------------------------------------------


def test_run_grid_runs_each_prior_once_and_every_decoder_step(engine, small):
    base = request(small, width=128, height=128, prior_steps=2, seed=7001)
    x_values, y_values = [2.0, 4.0], [1, 2]
    before = engine.counters.snapshot()
    grid = run_grid(engine, base, "prior_cfg", x_values, "decoder_steps", y_values)
    ran = engine.counters.since(before)
    assert ran.prior_runs == len(x_values)
    assert ran.prior_steps == len(x_values) * base.prior_steps
    assert ran.decoder_runs == len(x_values) * len(y_values)
    assert ran.decoder_steps == sum(y_values) * len(x_values)
    assert ran.prior_cache_hits == len(x_values) * (len(y_values) - 1)
    assert ran.text_encodes <= 1
    assert grid.counters.prior_runs == ran.prior_runs and grid.counters.decoder_steps == ran.decoder_steps
    for yi, row in enumerate(grid.cells):
        for xi, cell in enumerate(row):
            assert (cell.request.prior_cfg, cell.request.decoder_steps) == (x_values[xi], y_values[yi])
            assert cell.request.seed == 7001
            assert cell.image.size == (128, 128)
    # Same prior, different decoder steps: different images; the order in the grid follows the axes.
    assert grid.cells[0][0].image.tobytes() != grid.cells[1][0].image.tobytes()
    assert grid.order == [(0, 0), (0, 1), (1, 0), (1, 1)]
    _, _, pairs = split_parameters(grid.parameters)
    assert pairs["Grid X"] == "prior_cfg: 2.0, 4.0" and pairs["Grid Y"] == "decoder_steps: 1, 2"


def test_run_grid_with_one_axis(engine, small):
    base = request(small, width=128, height=128, prior_steps=2, seed=7101)
    before = engine.counters.snapshot()
    grid = run_grid(engine, base, "decoder_cfg", [1.0, 2.0, 3.0])
    ran = engine.counters.since(before)
    assert ran.prior_runs == 1  # decoder-only axis: one prior for the whole row
    assert ran.decoder_steps == 3 * base.decoder_steps
    assert len(grid.cells) == 1 and len(grid.cells[0]) == 3
    assert "Grid Y" not in split_parameters(grid.parameters)[2]


def test_run_grid_refuses_bad_axes_before_generating(engine, small):
    base = request(small, seed=7201)
    before = engine.counters.snapshot()
    with pytest.raises(InputError, match="two different grid axes"):
        run_grid(engine, base, "prior_cfg", [2.0, 4.0], "prior_cfg", [6.0])
    with pytest.raises(InputError, match="give values for decoder_steps"):
        run_grid(engine, base, "prior_cfg", [2.0, 4.0], "decoder_steps", [])
    x_values, y_values = list(range(1, 10)), list(range(1, 9))
    assert len(x_values) * len(y_values) > MAX_GRID_CELLS
    with pytest.raises(InputError, match=f"the limit is {MAX_GRID_CELLS}"):
        run_grid(engine, base, "prior_steps", x_values, "decoder_steps", y_values)
    # A cell over the pixel budget is refused as a whole, before any step runs.
    with pytest.raises(InputError, match="budget"):
        run_grid(engine, base, "width", [256, 4096], "height", [4096])
    assert engine.counters.since(before).prior_steps == 0
    assert engine.counters.since(before).decoder_steps == 0


# 3. A/B -----------------------------------------------------------------------------------


def test_compare_decoder_only_difference_shares_the_prior(engine, small):
    a = request(small, decoder_cfg=1.0)
    b = request(small, decoder_cfg=2.0)
    seeds = [7301, 7302]
    before = engine.counters.snapshot()
    report = compare(engine, a, b, seeds)
    ran = engine.counters.since(before)
    assert report.prior_shared is True
    assert report.text_shared is True
    assert report.diff == {"decoder_cfg": (1.0, 2.0)}
    assert ran.prior_runs == len(seeds) == report.prior_runs
    assert ran.prior_steps == len(seeds) * a.prior_steps == report.prior_steps
    assert ran.decoder_steps == 2 * len(seeds) * a.decoder_steps == report.decoder_steps
    assert [x.request.seed for x, _ in report.pairs] == seeds
    for item_a, item_b in report.pairs:
        assert item_a.request.seed == item_b.request.seed
        assert (item_a.prior_reused, item_b.prior_reused) == (False, True)
        assert item_a.image.tobytes() != item_b.image.tobytes()
    as_dict = report.as_dict()
    assert as_dict["diff"] == {"decoder_cfg": {"a": 1.0, "b": 2.0}}
    assert as_dict["seeds"] == seeds


def test_compare_prior_difference_runs_the_prior_for_each_side(engine, small):
    a = request(small, prior_cfg=4.0)
    b = request(small, prior_cfg=6.0, decoder_steps=3)
    before = engine.counters.snapshot()
    report = compare(engine, a, b, [7401])
    ran = engine.counters.since(before)
    assert report.prior_shared is False
    assert report.diff == {"prior_cfg": (4.0, 6.0), "decoder_steps": (2, 3)}
    assert ran.prior_runs == 2 == report.prior_runs
    assert ran.prior_steps == 2 * a.prior_steps
    assert ran.decoder_steps == a.decoder_steps + b.decoder_steps
    (item_a, item_b), = report.pairs
    assert (item_a.prior_reused, item_b.prior_reused) == (False, False)
    assert item_a.image.tobytes() != item_b.image.tobytes()


def test_compare_ignores_count_and_the_seed_in_the_diff(engine, small):
    a = request(small, seed=1, count=3)
    b = request(small, seed=2, count=1, decoder_cfg=1.5)
    before = engine.counters.snapshot()
    report = compare(engine, a, b, [7501])
    assert report.diff == {"decoder_cfg": (1.0, 1.5)}
    assert len(report.pairs) == 1  # one image per side per seed, whatever the count
    assert engine.counters.since(before).prior_runs == 1


def test_compare_needs_a_seed(engine, small):
    with pytest.raises(InputError, match="at least one seed"):
        compare(engine, request(small), request(small), [])


# 4. Composing images -------------------------------------------------------------------------


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


# 5. Axis values -------------------------------------------------------------------------------


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


def test_grid_base_with_random_seed_gets_one_seed_for_every_cell(engine, small):
    base = replace(request(small, width=128, height=128, prior_steps=2), seed=-1)
    grid = run_grid(engine, base, "decoder_steps", [1, 2])
    seeds = {cell.request.seed for row in grid.cells for cell in row}
    assert len(seeds) == 1 and seeds.pop() >= 0
