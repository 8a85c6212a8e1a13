"""The headless command line: ``python -m sote_ui generate ...``.

Example::

    python -m sote_ui generate --prompt "1girl, solo, smile" --seed 42 --out smile.png
    python -m sote_ui generate --preset fast --count 4 --out outputs/
    python -m sote_ui generate --prompt "1girl, <lora:ink:0.8>" --lora flat-color:0.5 --out ink.png
    python -m sote_ui loras                 # the LoRAs of the loras folder
    python -m sote_ui info smile.png
    python -m sote_ui fix-prompt "masterpiece, 1girl, lnog hair"   # -> best quality, 1girl, long hair
    python -m sote_ui cache info            # the fp8 weight cache; `cache clear` empties it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core import tags
from .core.errors import InputError
from .core.request import DECODER_SAMPLERS, MAX_REFERENCES, MAX_STRENGTH, PRIOR_SAMPLERS, RESIZE_MODES

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_CANCELLED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


# Flag -> request key. Values stay text here; the request validates them.
REQUEST_FLAGS = {
    "--prompt": "prompt",
    "--negative-prompt": "negative_prompt",
    "--aesthetic": "aesthetic",
    "--quality": "quality",
    "--date": "date",
    "--rating": "rating",
    "--custom": "custom",
    "--artist": "artist",
    "--width": "width",
    "--height": "height",
    "--seed": "seed",
    "--prior-steps": "prior_steps",
    "--prior-cfg": "prior_cfg",
    "--decoder-steps": "decoder_steps",
    "--decoder-cfg": "decoder_cfg",
    "--count": "count",
    "--prompt-padding": "prompt_padding",
    "--init-image": "init_image",
    "--denoise": "denoise",
    "--resize-mode": "resize_mode",
    "--hires-scale": "hires_scale",
    "--hires-denoise": "hires_denoise",
    "--hires-steps": "hires_steps",
    "--prior-sampler": "prior_sampler",
    "--decoder-sampler": "decoder_sampler",
    "--prior-shift": "prior_shift",
    "--decoder-shift": "decoder_shift",
}
# Inpainting, outpainting and ControlNets: each flag is its field's name.
INPAINT_FLAGS = {f"--{key.replace('_', '-')}": key for key in (
    "mask", "mask_blur", "inpaint_area", "outpaint", "control", "control_image", "control_strength",
    "control_start", "control_end", "canny_low", "canny_high")}
REQUEST_FLAGS.update(INPAINT_FLAGS)

_HELP = {
    "prompt": "your tags, e.g. '1girl, solo, smile' (picked tags are added in the dataset's order)",
    "negative_prompt": f"negative prompt (default: {tags.DEFAULT_NEGATIVE!r})",
    "aesthetic": "aesthetic tag: none or " + ", ".join(tags.AESTHETIC) + " (default: very aesthetic)",
    "quality": "quality tag: none or " + ", ".join(tags.QUALITY) + " (default: best quality)",
    "date": "date tag: none or " + ", ".join(f"{k} ({v})" for k, v in tags.DATE.items()) + " (default: newest)",
    "rating": "rating tag: none or " + ", ".join(tags.RATING),
    "custom": "custom tag: none or " + ", ".join(tags.CUSTOM),
    "artist": "pixiv artist: adds 'art by NAME'",
    "width": "width, a multiple of 128 (default 1024)",
    "height": "height, a multiple of 128 (default 1536)",
    "seed": "seed; -1 or omitted picks one (images use seed, seed+1, ...)",
    "prior_steps": "prior (stage C) steps (default 40)",
    "prior_cfg": "prior CFG (default 8)",
    "decoder_steps": "decoder (stage B) steps (default 10)",
    "decoder_cfg": "decoder ('secondary') CFG (default 1.0; applied only above 1)",
    "count": "images in this run (default 1)",
    "prompt_padding": "unmasked (default: the text encoder sees the padding, as in training) or masked (as "
                      "diffusers and the model card's script encode)",
    "init_image": "image to image: start from this image (resized to width x height by --resize-mode)",
    "denoise": "image to image: how much of the start image is redrawn, 0 (none: no prior step) to 1 (all: the "
               "image is ignored); the prior runs round(steps x denoise) steps (default 0.75)",
    "resize_mode": "how the start image meets width x height: " + ", ".join(RESIZE_MODES) + " (default crop)",
    "hires_scale": "hi-res fix: 1 (off, default) or 1.25 to 2; width and height are the first pass, the image is "
                   "that times the factor, each side snapped to a multiple of 128",
    "hires_denoise": "hi-res fix: denoise of the second pass (default 0.5)",
    "hires_steps": "hi-res fix: prior steps of the second pass, of which round(N x hires denoise) run (default 0: "
                   "as many as --prior-steps)",
    "prior_sampler": "prior sampler: " + ", ".join(PRIOR_SAMPLERS) + " (default ddpm, the model card's)",
    "decoder_sampler": "decoder sampler: " + ", ".join(DECODER_SAMPLERS) + " (default ddpm)",
    "prior_shift": "prior noise schedule shift (default 1.0: the model card's; Stability's code uses 2.0)",
    "decoder_shift": "decoder noise schedule shift (default 1.0)",
    "mask": "mask image over the start image: white = repaint (resized to the start image, with a note)",
    "mask_blur": "feather of the mask's edge in pixels (default 4)",
    "inpaint_area": "whole (default) or masked: generate only a crop around the mask at full size, paste back",
    "outpaint": "extend the canvas: left:N,right:N,up:N,down:N (multiples of 128), the new area repainted",
    "control": "ControlNet: none, canny, inpaint (the default with --mask/--outpaint) or sr (super-resolution)",
    "control_image": "the ControlNet's image (default: the start image): canny finds its edges; sr upscales it 2x",
    "control_strength": "ControlNet strength, 0..2 (default 1; 0 = as without it)",
    "control_start": "where in the prior's steps control starts, 0..1 (default 0)",
    "control_end": "where in the prior's steps control ends, 0..1 (default 1)",
    "canny_low": "Canny's lower threshold (default 100)",
    "canny_high": "Canny's upper threshold (default 200)",
}


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    from .core.memory import Mode

    group = parser.add_argument_group("model and memory")
    group.add_argument("--model", help="a name from models.json, a Hub id, or a folder whose card names its partner")
    group.add_argument("--prior", help="prior (stage C) folder or Hub id")
    group.add_argument("--decoder", help="decoder (stage B + VQGAN) folder or Hub id")
    group.add_argument("--mode", default="auto", help="memory mode: " + ", ".join(m.value for m in Mode))
    group.add_argument("--device", default=None, help="auto (default), cuda, cuda:N, xpu, mps or cpu")
    group.add_argument("--effnet", default=None, metavar="PATH",
                       help="image to image's EfficientNet encoder: a local effnet_encoder.safetensors (default: "
                            "the model's own, else downloaded from stabilityai/stable-cascade on first use)")
    group.add_argument("--controlnet", default=None, metavar="PATH",
                       help="a stage-C ControlNet file in Stability's layout (default: the model's own, else "
                            "stabilityai/stable-cascade's controlnet/ file, downloaded on first use)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sote_ui", description="Sote Studio: SoteDiffusion Wuerstchen3 on your own GPU")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    gen = commands.add_parser("generate", help="generate images")
    for flag, key in REQUEST_FLAGS.items():
        gen.add_argument(flag, dest=key, default=None, help=_HELP[key])
    gen.add_argument("--image", dest="images", action="append", default=None, metavar="PATH",
                     help=f"a reference image for image remix (repeatable, up to {MAX_REFERENCES})")
    gen.add_argument("--image-strength", dest="image_strengths", default=None, metavar="S",
                     help=f"strength of the reference images, 0 to {MAX_STRENGTH:g} (default 1): one for all, "
                          "or a comma-separated list, one per image")
    gen.add_argument("--lora", dest="loras", action="append", default=None, metavar="NAME[:W[:TE_W]]",
                     help="a LoRA from the loras folder ($SOTE_LORA_DIR, else ~/.sote-studio/loras) at weight W "
                          "(default 1; TE_W: its own text-encoder weight); repeatable. <lora:NAME:W> in the prompt "
                          "works too")
    gen.add_argument("--preset", help="start from this preset (flags given override it)")
    gen.add_argument("--presets-dir", default=None, help="user presets folder (default ~/.sote-studio/presets)")
    gen.add_argument("--from-image", help="start from the settings stored in a PNG")
    gen.add_argument("--out", default="outputs", help="a .png file, or a folder (default: outputs/)")
    gen.add_argument("--quiet", action="store_true", help="no progress output")
    add_model_flags(gen)

    tiny = commands.add_parser("make-tiny", help="build the tiny random-weight test model in a folder")
    tiny.add_argument("folder")
    tiny.add_argument("--full", action="store_true",
                      help="the real, full-size architectures instead (random bf16 weights, ~13 GB on disk)")

    cache = commands.add_parser("cache", help="the on-disk cache of fp8 weights: info or clear")
    cache.add_argument("action", choices=["info", "clear"])

    info = commands.add_parser("info", help="print the generation settings stored in a PNG")
    info.add_argument("image")

    fix = commands.add_parser("fix-prompt", help="check a prompt against the tags the model was trained with: "
                                                  "print it fixed, then each finding")
    fix.add_argument("prompt")
    fix.add_argument("--json", action="store_true", help='print {"fixed": ..., "findings": [...]} instead')

    commands.add_parser("loras", help="list the LoRAs of the loras folder (name, A1111 hash, size)")

    pre = commands.add_parser("presets", help="list presets")
    pre.add_argument("--presets-dir", default=None)
    return parser


def _request_values(args: argparse.Namespace) -> dict:
    keys = (*REQUEST_FLAGS.values(), "images", "image_strengths", "loras")
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def _store(presets_dir):
    from .core.presets import PresetStore, default_user_dir

    return PresetStore(user_dir=Path(presets_dir).expanduser() if presets_dir else default_user_dir())


def _output_paths(out: str, seeds: list[int]) -> list[Path]:
    from .core.outputs import unique_path

    target = Path(out).expanduser()
    if target.suffix.lower() == ".png":
        if len(seeds) == 1:
            return [unique_path(target)]
        return [unique_path(target.with_name(f"{target.stem}-{seed}.png")) for seed in seeds]
    return [unique_path(target / f"sote-{seed}.png") for seed in seeds]


def cmd_generate(args: argparse.Namespace) -> int:
    from .core.metadata import not_applied_note, parse_parameters, read_parameters
    from .core.request import FIELD_NAMES, build_request

    values: dict = {}
    base = None
    if args.preset:
        base = _store(args.presets_dir).request(args.preset)
    if args.from_image:
        from .core.outputs import open_image

        text = read_parameters(open_image(args.from_image))
        if not text:
            raise InputError(f"{args.from_image} carries no generation settings")
        found = parse_parameters(text)
        values.update({k: v for k, v in found.items() if k in FIELD_NAMES})
        if note := not_applied_note(found):
            print(f"note: {note}", file=sys.stderr)
        from .core.loras import missing_note

        if note := missing_note(found.get("prompt", ""), found.get("lora_hashes")):
            print(f"note: {note}", file=sys.stderr)
        if "mask_note" in found:
            print(f"note: {found['mask_note']}", file=sys.stderr)
    values.update(_request_values(args))
    request = build_request(values, base=base).with_seed()

    from .core.outputs import save_png
    from .engine import Engine
    from .engine.models import resolve_source

    source = resolve_source(args.model, args.prior, args.decoder)
    engine = Engine(source, mode=args.mode, device=args.device, effnet=args.effnet,
                    controlnet=getattr(args, "controlnet", None))

    def status(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    def progress(p) -> None:
        if not args.quiet:
            print(f"\rimage {p.image + 1}/{p.images}  {p.stage} {p.step}/{p.steps}  [{p.done}/{p.total}]",
                  end="", file=sys.stderr, flush=True)

    engine.load(status)
    result = engine.generate(request, on_progress=progress)
    if not args.quiet:
        print(file=sys.stderr)
    for warning in result.warnings:
        print(f"note: {warning}", file=sys.stderr)
    paths = _output_paths(args.out, [img.request.seed for img in result.images])
    for item, path in zip(result.images, paths):
        save_png(item.image, item.parameters, path)
        print(path)
    status(f"{len(result.images)} image(s) in {result.seconds:.1f} s ({engine.plan.mode.value})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .core.metadata import parse_parameters, read_parameters
    from .core.outputs import open_image

    text = read_parameters(open_image(args.image))
    if not text:
        raise InputError(f"{args.image} carries no generation settings")
    print(json.dumps(parse_parameters(text), indent=2, ensure_ascii=False))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    presets, errors = _store(args.presets_dir).load()
    for name, preset in presets.items():
        where = "shipped" if preset.shipped else "user"
        print(f"{name:24} {where:8} {preset.description}")
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    return 0


def cmd_loras(args: argparse.Namespace) -> int:
    from .core import loras

    found = loras.available()
    for name, path in found.items():
        print(f"{name:32} {loras.short_hash(path)}  {path.stat().st_size / 1e6:8.1f} MB")
    print(f"{len(found)} LoRA(s) in {loras.lora_dir()} (set {loras.ENV} to use another folder)", file=sys.stderr)
    return 0


def cmd_fix_prompt(args: argparse.Namespace) -> int:
    """The fixed prompt, then one ``kind: message`` line per finding. Chunks are not counted here: that
    needs the model's tokenizer (the app's /fix_prompt counts them once the model is loaded)."""
    from .core import fixer

    fixed, findings = fixer.fix_prompt(args.prompt)
    if args.json:
        print(json.dumps({"fixed": fixed, "findings": findings}, ensure_ascii=False))
        return 0
    print(fixed)
    for finding in findings:
        print(f"{finding['kind']}: {finding['message']}")
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from .engine.builders import build_full_pair, build_tiny_pair

    if args.full:
        prior, decoder = build_full_pair(args.folder, on_status=lambda message: print(message, file=sys.stderr))
    else:
        prior, decoder = build_tiny_pair(args.folder)
    print(f"--prior {prior} --decoder {decoder}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .engine import weight_cache

    root = weight_cache.cache_root()
    if args.action == "clear":
        count, size = weight_cache.clear()
        print(f"removed {count} file(s), {weight_cache.human(size)}, from {root}")
        return 0
    found = weight_cache.entries()
    print(f"fp8 weight cache: {root / weight_cache.SUBDIR} (set SOTE_CACHE to move it)")
    usable = [entry for entry in found if entry.complete]
    for entry in found:
        state = "ok" if entry.complete else _CACHE_STATES.get(entry.state, entry.state)
        where = f"  {entry.source}" if entry.source else ""
        print(f"  {entry.stem:36} {weight_cache.human(entry.bytes):>10}  {entry.flavour:20} {state}{where}")
    print(f"{len(usable)} entr{'y' if len(usable) == 1 else 'ies'}, {weight_cache.human(sum(e.bytes for e in usable))}")
    leftovers = [entry for entry in found if entry.state not in ("ok", "temporary")]
    if leftovers:
        print(f"{len(leftovers)} unusable: removed at the next fp8 start, or by `cache clear`")
    return 0


_CACHE_STATES = {"junk": "junk (not a cache entry, or damaged)", "incomplete": "incomplete (a size mismatch)",
                 "old version": "written by another version", "no description": "junk: no description",
                 "no weights": "junk: no weights", "temporary": "being written, or a write that died"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    handler = {"generate": cmd_generate, "info": cmd_info, "presets": cmd_presets,
               "make-tiny": cmd_make_tiny, "cache": cmd_cache, "fix-prompt": cmd_fix_prompt,
               "loras": cmd_loras}[args.command]
    from .core.errors import Cancelled, GenerationError

    try:
        return handler(args)
    except InputError as exc:  # includes ModelError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, Cancelled):
        print("\ncancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # still one line, never a traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: unexpected {type(exc).__name__}: {first[:200]}", file=sys.stderr)
        return EXIT_FAILED
