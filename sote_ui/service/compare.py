"""A/B comparison of presets and two-stage-aware parameter grids.

Runs are ordered so each prior output is computed once: A and B with the same
seed share the prior when they differ only in decoder settings, and a grid
runs every decoder value right after the prior it needs. The engine's step
counters prove it in the report.

Gradio-free; images are composed with Pillow.

Example::

    report = compare(engine, request_a, request_b, seeds=[1, 2, 3, 4])
    report.prior_shared, report.diff
    grid = run_grid(engine, base, "prior_cfg", [4, 6, 8], "decoder_steps", [8, 10, 12])
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from PIL import Image, ImageDraw, ImageFont

from ..core.errors import Cancelled, InputError
from ..core.metadata import format_parameters
from ..core.request import DECODER_KEYS, DEFAULT_LIMITS, PRIOR_KEYS, GenerationRequest, Limits, build_request

# What a grid axis can vary, with the label a person reads. ``prompt_sr`` is A1111's "Prompt S/R":
# the first value is searched for in the prompt and each value replaces it in turn.
AXIS_LABELS = {
    "prior_cfg": "Prior CFG",
    "prior_steps": "Prior steps",
    "decoder_cfg": "Decoder CFG",
    "decoder_steps": "Decoder steps",
    "seed": "Seed",
    "width": "Width",
    "height": "Height",
    "prompt_sr": "Prompt S/R",
    "artist": "Artist",
    "aesthetic": "Aesthetic",
    "quality": "Quality",
    "date": "Date",
    "rating": "Rating",
    "denoise": "Denoise",
    "hires_scale": "Hi-res upscale",
    "hires_denoise": "Hi-res denoise",
    "prior_sampler": "Prior sampler",
    "decoder_sampler": "Decoder sampler",
    "prior_shift": "Prior shift",
    "decoder_shift": "Decoder shift",
}
GRID_KEYS = tuple(AXIS_LABELS)
MAX_GRID_CELLS = 64
MAX_SHEET_PIXELS = 48_000_000  # a grid sheet past this is shrunk (a full-size 8x8 grid would be 100 MP)


@dataclass
class CompareReport:
    pairs: list[tuple[Any, Any]]  # (GeneratedImage A, GeneratedImage B) per seed
    diff: dict[str, tuple[Any, Any]]
    prior_shared: bool
    text_shared: bool
    prior_runs: int
    prior_steps: int
    decoder_steps: int
    seconds_a: float
    seconds_b: float
    stopped: bool = False  # Stop came before every seed was done; ``pairs`` holds the finished ones

    def as_dict(self) -> dict[str, Any]:
        return {
            "prior_shared": self.prior_shared,
            "text_shared": self.text_shared,
            "diff": {k: {"a": a, "b": b} for k, (a, b) in self.diff.items()},
            "seeds": [a.request.seed for a, _ in self.pairs],
            "prior_runs": self.prior_runs,
            "prior_steps_run": self.prior_steps,
            "decoder_steps_run": self.decoder_steps,
            "seconds_a": round(self.seconds_a, 3),
            "seconds_b": round(self.seconds_b, 3),
            "stopped": self.stopped,
        }


def compare(engine, a: GenerationRequest, b: GenerationRequest, seeds: list[int],
            on_progress: Callable | None = None, should_stop: Callable | None = None) -> CompareReport:
    """Generate A and B for every seed; share the prior where only decoder settings differ."""
    if not seeds:
        raise InputError("give at least one seed")
    jobs = []
    for seed in seeds:
        jobs += [replace(a, seed=seed, count=1), replace(b, seed=seed, count=1)]
    before = engine.counters.snapshot()
    stopped = False
    try:
        result = engine.generate_many(jobs, on_progress, should_stop)
        images, counters = result.images, result.counters
    except Cancelled as exc:  # Stop keeps the pairs finished so far
        images = getattr(exc, "images", [])
        if len(images) < 2:
            raise
        stopped, counters = True, engine.counters.since(before)
    pairs = [(images[i], images[i + 1]) for i in range(0, len(images) - 1, 2)]
    diff = {k: v for k, v in replace(a, count=1).differences(replace(b, count=1)).items() if k != "seed"}
    prior_differs = any(k not in DECODER_KEYS for k in diff)
    return CompareReport(
        pairs=pairs,
        diff=diff,
        prior_shared=not prior_differs and counters.prior_runs <= len(pairs) + stopped,
        text_shared=counters.text_encodes <= 1,
        prior_runs=counters.prior_runs,
        prior_steps=counters.prior_steps,
        decoder_steps=counters.decoder_steps,
        seconds_a=sum(p[0].seconds for p in pairs),
        seconds_b=sum(p[1].seconds for p in pairs),
        stopped=stopped,
    )


def axis_field(key: str) -> str:
    """The request field an axis sets."""
    return "prompt" if key == "prompt_sr" else key


def axis_terms(key: str, text: str, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """The values of an axis as typed (comma-separated, blanks dropped); what the grid's labels show.

    Refuses more values than a grid has cells, and text longer than that many
    prompts, before anything else is done with them.
    """
    if key not in GRID_KEYS:
        raise InputError(f"{key!r} can't be a grid axis; choose one of: {', '.join(GRID_KEYS)}")
    text = str(text)
    longest = (MAX_GRID_CELLS + 1) * (limits.max_prompt_chars + 1)
    if len(text) > longest:
        raise InputError(f"the {AXIS_LABELS[key]} values are {len(text)} characters long; the limit is {longest}")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        example = "tag to find, replacement, another" if key == "prompt_sr" else "4, 6, 8"
        raise InputError(f"give values for {key}, e.g. {example}")
    # Prompt S/R's first term is what to find; it is also the axis' first value.
    if len(parts) > MAX_GRID_CELLS:
        raise InputError(f"{AXIS_LABELS[key]} has {len(parts)} values; a grid has at most {MAX_GRID_CELLS} cells")
    return parts


def check_grid_size(x_key: str, x_text: str, y_key: str | None, y_text: str,
                    limits: Limits = DEFAULT_LIMITS) -> int:
    """The number of cells the typed axes make; refused past :data:`MAX_GRID_CELLS` before any value is built."""
    columns = len(axis_terms(x_key, x_text, limits))
    rows = len(axis_terms(y_key, y_text, limits)) if y_key else 1
    if columns * rows > MAX_GRID_CELLS:
        raise InputError(f"{columns} x {rows} = {columns * rows} cells; the limit is {MAX_GRID_CELLS}")
    return columns * rows


def replaced_length(prompt: str, find: str, term: str) -> int:
    """How long ``prompt.replace(find, term)`` would be, without building it."""
    return len(prompt) + prompt.count(find) * (len(term) - len(find))


def parse_values(key: str, text: str, limits: Limits = DEFAULT_LIMITS,
                 base: GenerationRequest | None = None) -> list:
    """Parse a comma-separated axis like ``4, 6, 8`` for ``key``; each value is validated on ``base``.

    For ``prompt_sr`` the values are whole prompts: ``base.prompt`` with its
    first term replaced by each term in turn (the first term itself included).
    """
    parts = axis_terms(key, text, limits)
    if key == "denoise" and (base is None or base.init_image is None):
        raise InputError("a Denoise axis needs a start image: add one in the Image to image panel")
    if key == "prompt_sr":
        prompt = (base or GenerationRequest()).prompt
        find = parts[0]
        if find not in prompt:
            raise InputError(f"Prompt S/R: {find[:80]!r} is not in the prompt {prompt[:80]!r}")
        for term in parts:  # sizes first: a short prompt naming the term often can grow a thousandfold
            length = replaced_length(prompt, find, term)
            if length > limits.max_prompt_chars:
                raise InputError(f"Prompt S/R: replacing {find[:40]!r} with {term[:40]!r} makes a prompt of {length} "
                                 f"characters; the limit is {limits.max_prompt_chars}")
        parts = [prompt.replace(find, term) for term in parts]
    values = []
    for part in parts:
        request = build_request({axis_field(key): part}, base=base, limits=limits)
        if key == "seed" and request.seed < 0:
            raise InputError("a seed axis needs concrete seeds (0 or more), not -1")
        values.append(getattr(request, axis_field(key)))
    return values


@dataclass
class Grid:
    image: Image.Image
    cells: list[list[Any]]  # [y][x] GeneratedImage
    x_key: str
    x_values: list
    y_key: str | None
    y_values: list
    parameters: str
    counters: Any = None
    order: list[tuple[int, int]] = field(default_factory=list)


def grid_jobs(base: GenerationRequest, x_key: str, x_values: list, y_key: str | None,
              y_values: list) -> list[tuple[int, int, GenerationRequest]]:
    """All cells, ordered so runs sharing a prior are adjacent (decoder-only axes innermost)."""
    y_values = y_values if y_key else [None]
    cells = []
    for yi, yv in enumerate(y_values):
        for xi, xv in enumerate(x_values):
            request = replace(base, count=1, **{axis_field(x_key): xv})
            if y_key:
                request = replace(request, **{axis_field(y_key): yv})
            cells.append((xi, yi, request))

    def prior_key(cell):
        return tuple(getattr(cell[2], k) for k in PRIOR_KEYS)

    order = {key: i for i, key in enumerate(dict.fromkeys(prior_key(c) for c in cells))}
    return sorted(cells, key=lambda c: order[prior_key(c)])


def run_grid(engine, base: GenerationRequest, x_key: str, x_values: list, y_key: str | None = None,
             y_values: list | None = None, on_progress: Callable | None = None,
             should_stop: Callable | None = None, model_info=None, limits: Limits = DEFAULT_LIMITS,
             x_terms: list[str] | None = None, y_terms: list[str] | None = None) -> Grid:
    """Generate a labelled grid of ``x_key`` by ``y_key`` values from ``base``.

    ``x_terms`` / ``y_terms`` are the values as the user typed them, for the
    labels (needed for ``prompt_sr``, whose values are whole prompts).
    """
    y_values = list(y_values or [])
    if y_key and axis_field(y_key) == axis_field(x_key):
        raise InputError("pick two different grid axes")
    if y_key and not y_values:
        raise InputError(f"give values for {y_key}")
    cells_count = len(x_values) * (len(y_values) if y_key else 1)
    if cells_count > MAX_GRID_CELLS:
        raise InputError(f"the grid has {cells_count} cells; the limit is {MAX_GRID_CELLS}")
    base = base.with_seed()
    jobs = grid_jobs(base, x_key, x_values, y_key, y_values)
    for _, _, request in jobs:  # each cell must be valid on its own (e.g. pixel budget)
        build_request(request.to_dict(), limits=limits)
    result = engine.generate_many([r for _, _, r in jobs], on_progress, should_stop)
    rows = len(y_values) if y_key else 1
    cells: list[list[Any]] = [[None] * len(x_values) for _ in range(rows)]
    for (xi, yi, _), item in zip(jobs, result.images):
        cells[yi][xi] = item
    x_terms = list(x_terms or map(str, x_values))
    y_terms = list(y_terms or map(str, y_values))
    x_labels = [f"{AXIS_LABELS[x_key]} {v}" for v in x_terms]
    y_labels = [f"{AXIS_LABELS[y_key]} {v}" for v in y_terms] if y_key else [""]
    image = compose_grid([[c.image for c in row] for row in cells], x_labels, y_labels)
    extra = {"Grid X": f"{x_key}: {', '.join(x_terms)}"}
    if y_key:
        extra["Grid Y"] = f"{y_key}: {', '.join(y_terms)}"
    info = model_info or engine.model_info()
    parameters = format_parameters(base, base.seed, info, extra=extra)
    return Grid(image, cells, x_key, list(x_values), y_key, y_values, parameters, result.counters,
                [(xi, yi) for xi, yi, _ in jobs])


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def compose_grid(images: list[list[Image.Image]], x_labels: list[str], y_labels: list[str],
                 max_cell: int | None = None) -> Image.Image:
    """Lay images out in rows with column labels on top and row labels on the left.

    Cells keep their full size unless the sheet would pass :data:`MAX_SHEET_PIXELS`
    (or a cell ``max_cell`` pixels on its longer side); images are never scaled up.
    """
    first = images[0][0]
    columns, rows = max(len(row) for row in images), len(images)
    scale = min(1.0, (MAX_SHEET_PIXELS / (columns * rows * first.width * first.height)) ** 0.5)
    if max_cell:
        scale = min(scale, max_cell / max(first.width, first.height))
    cell_w, cell_h = int(first.width * scale), int(first.height * scale)
    font_size = max(14, cell_w // 18)
    font = _font(font_size)
    top = font_size * 2
    left = max((int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label, font=font))
                for label in y_labels), default=0)
    left = left + font_size if left else 0
    canvas = Image.new("RGB", (left + cell_w * len(x_labels), top + cell_h * len(y_labels)), "white")
    draw = ImageDraw.Draw(canvas)
    for xi, label in enumerate(x_labels):
        draw.text((left + xi * cell_w + cell_w // 2, top // 2), label, fill="black", font=font, anchor="mm")
    for yi, label in enumerate(y_labels):
        if label:
            draw.text((left // 2, top + yi * cell_h + cell_h // 2), label, fill="black", font=font, anchor="mm")
        for xi, img in enumerate(images[yi]):
            canvas.paste(img.resize((cell_w, cell_h)), (left + xi * cell_w, top + yi * cell_h))
    return canvas
