"""A/B comparison and two-stage-aware grids (sote_ui/service/compare.py) on the real tiny pipelines.

The ``engine`` fixture empties the engine's caches before each test, so the prior runs a test counts
are its own (the seeds stay apart all the same). The job order, the axis values and the composed
sheet are checked without a model in tests/core/test_grid_layout.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sote_ui.core.errors import Cancelled, InputError
from sote_ui.core.metadata import split_parameters
from sote_ui.core.request import build_request
from sote_ui.service.compare import MAX_GRID_CELLS, compare, run_grid


def request(small, **values):
    return build_request({**small, **values})


# 1. Grids -------------------------------------------------------------------------------


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


# 2. A/B -----------------------------------------------------------------------------------


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


def test_a_stopped_compare_returns_the_pairs_it_finished(engine, small):
    a = request(small, decoder_cfg=1.0)
    b = request(small, decoder_cfg=2.0)
    reached = {"image": 0}

    def on_progress(p):
        reached["image"] = p.image

    # Stop once the third image (seed 7602's A) has started: the first pair is done, the second is not.
    report = compare(engine, a, b, [7601, 7602, 7603], on_progress, lambda: reached["image"] >= 2)
    assert report.stopped is True
    assert [(x.request.seed, y.request.seed) for x, y in report.pairs] == [(7601, 7601)]
    assert report.as_dict()["stopped"] is True and report.as_dict()["seeds"] == [7601]
    assert report.pairs[0][0].image.tobytes() != report.pairs[0][1].image.tobytes()


def test_a_compare_stopped_before_a_pair_is_finished_says_so(engine, small):
    with pytest.raises(Cancelled):
        compare(engine, request(small), request(small, decoder_cfg=2.0), [7611], None, lambda: True)


def test_compare_needs_a_seed(engine, small):
    with pytest.raises(InputError, match="at least one seed"):
        compare(engine, request(small), request(small), [])


def test_grid_base_with_random_seed_gets_one_seed_for_every_cell(engine, small):
    base = replace(request(small, width=128, height=128, prior_steps=2), seed=-1)
    grid = run_grid(engine, base, "decoder_steps", [1, 2])
    seeds = {cell.request.seed for row in grid.cells for cell in row}
    assert len(seeds) == 1 and seeds.pop() >= 0
