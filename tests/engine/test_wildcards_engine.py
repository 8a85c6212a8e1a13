"""Wildcards through the engine on the tiny model: per-image picks in generate, compare and grids."""

from __future__ import annotations

from support import wildcard_chain

from sote_ui.core import wildcards
from sote_ui.core.metadata import parse_parameters
from sote_ui.core.request import build_request
from sote_ui.service.compare import compare, run_grid

TEMPLATE = "1girl, {red|blue|green|silver|pink} hair, {smile|frown|crying}, __eye_color__"


def test_each_image_of_a_run_has_its_own_picks_in_its_request_and_metadata(engine, small):
    request = build_request({**small, "prompt": TEMPLATE, "seed": 900, "count": 3})
    result = engine.generate(request)
    expected = [wildcards.resolve(TEMPLATE, seed) for seed in (900, 901, 902)]
    assert [item.request.prompt for item in result.images] == expected
    assert [parse_parameters(item.parameters)["prompt"] for item in result.images] == expected


def test_compare_sides_with_one_seed_get_the_same_picks_and_share_the_prior(engine, small):
    a = build_request({**small, "prompt": TEMPLATE, "decoder_cfg": 1.0})
    b = build_request({**small, "prompt": TEMPLATE, "decoder_cfg": 2.0})
    report = compare(engine, a, b, seeds=[910, 911])
    for (left, right), seed in zip(report.pairs, (910, 911)):
        assert left.request.prompt == right.request.prompt == wildcards.resolve(TEMPLATE, seed)
    assert report.prior_shared and report.prior_runs == 2


def test_grid_cells_with_one_seed_get_the_same_picks(engine, small):
    base = build_request({**small, "prompt": TEMPLATE, "seed": 920})
    grid = run_grid(engine, base, "decoder_steps", [1, 2], "seed", [920, 921])
    for row, seed in zip(grid.cells, (920, 921)):
        assert {cell.request.prompt for cell in row} == {wildcards.resolve(TEMPLATE, seed)}


def test_inside_the_engine_each_image_walks_only_its_own_picks(engine, small, tmp_path, monkeypatch):
    """A chain of four files of 30 lines, each line naming the next file: checked once when the request is
    built (outside the engine), then each image parses its template alone, not the files' 30^4 paths."""
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    folder = tmp_path / "wildcards"
    folder.mkdir()
    wildcard_chain(folder, levels=4, stem="deep")
    request = build_request({**small, "prompt": "1girl, __deep0__", "seed": 930, "count": 3})
    parsed = []
    real = wildcards.parse

    def counted(text, where="prompt"):
        parsed.append(text)
        if len(parsed) > 1000:
            raise RuntimeError("more than 1,000 templates parsed inside the engine")
        return real(text, where)

    monkeypatch.setattr(wildcards, "parse", counted)
    result = engine.generate(request)
    assert parsed == ["1girl, __deep0__"] * 3
    prompts = [item.request.prompt for item in result.images]
    assert prompts == [wildcards.resolve("1girl, __deep0__", seed) for seed in (930, 931, 932)]
    assert all(p.count("pick ") == 4 and "__" not in p for p in prompts)
