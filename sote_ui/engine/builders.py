"""Build a tiny random-weight Stable Cascade pair on disk, offline.

The pair has the same on-disk layout as the published SoteDiffusion repos (a
prior folder and a decoder folder, each a diffusers pipeline folder with
``model_index.json``, a model card and one subfolder per component, the
decoder's VQGAN declared as ``["wuerstchen", "PaellaVQModel"]``), so the app,
the CLI and the tests load it through exactly the code path used for the real
model. Its images are noise: it exists to exercise the pipeline, not to draw.

Example::

    python -m sote_ui make-tiny ./tiny-model
    python -m sote_ui generate --prior ./tiny-model/prior --decoder ./tiny-model/decoder \
        --width 256 --height 256 --prior-steps 2 --decoder-steps 2 --out noise.png

Beside the two folders lies image to image's EfficientNet encoder
(``effnet_encoder.safetensors``, tiny or full-size, in Stability's key layout).

``make-tiny --full DIR`` builds the same layout with the real, full-size
architectures (random bf16 weights, ~13 GB on disk): images are still noise,
but parameter counts, file sizes, load time, memory and compute per step are
the real model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.tags import ALL_KNOWN_TAGS

TINY_HIDDEN = 32
PRIOR_NAME = "prior"
DECODER_NAME = "decoder"

# Words that get a whole-word token in the tiny vocabulary, so token counts
# of tag prompts look roughly like the real CLIP tokenizer's.
_COMMON_WORDS = """
1girl 1boy 2girls solo looking at viewer smile open mouth long hair short hair blue eyes red eyes
blush hat dress shirt skirt school uniform hoodie indoors outdoors sky cloud flower cowboy shot
straight hair slight casual furniture doorway upper body full standing sitting holding white black
monochrome sketch realistic art by display name visual novel cg anime wallpaper cat ears tail
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    # The byte-to-printable-character table every CLIP BPE vocabulary is built on.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}


def _tiny_vocabulary() -> tuple[dict[str, int], list[str]]:
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    for ch in alphabet:
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[str] = []
    words: set[str] = set(_COMMON_WORDS)
    for tag in ALL_KNOWN_TAGS:
        words.update(tag.split())
    for word in sorted(words):
        if len(word) < 2 or not word.isalpha():
            continue
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        left = symbols[0]
        for right in symbols[1:]:
            merged = left + right
            if merged not in vocab:
                merges.append(f"{left} {right}")
                vocab[merged] = len(vocab)
            left = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_tokenizer(folder: Path) -> int:
    vocab, merges = _tiny_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"},
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": 77,
            "do_lower_case": True,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
    )
    return len(vocab)


def _text_encoder(vocab_size: int, bos: int, eos: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_HIDDEN,
        intermediate_size=37,
        projection_dim=TINY_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config).eval()


def _prior_unet():
    from diffusers import StableCascadeUNet

    return StableCascadeUNet(
        in_channels=16,
        out_channels=16,
        timestep_ratio_embedding_dim=64,
        patch_size=1,
        conditioning_dim=TINY_HIDDEN,
        block_out_channels=(TINY_HIDDEN, TINY_HIDDEN),
        num_attention_heads=(2, 2),
        down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1),
        down_blocks_repeat_mappers=(1, 1),
        up_blocks_repeat_mappers=(1, 1),
        block_types_per_layer=(
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
        ),
        clip_text_in_channels=TINY_HIDDEN,
        clip_text_pooled_in_channels=TINY_HIDDEN,
        clip_image_in_channels=TINY_HIDDEN,
        clip_seq=4,
        kernel_size=3,
        dropout=(0.0, 0.0),
        self_attn=True,
        timestep_conditioning_type=("sca", "crp"),
        switch_level=(False,),
    ).eval()


def _decoder_unet():
    from diffusers import StableCascadeUNet

    return StableCascadeUNet(
        in_channels=4,
        out_channels=4,
        timestep_ratio_embedding_dim=64,
        patch_size=4,
        conditioning_dim=TINY_HIDDEN,
        block_out_channels=(16, 32),
        num_attention_heads=(-1, 2),
        down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1),
        down_blocks_repeat_mappers=(1, 1),
        up_blocks_repeat_mappers=(2, 2),
        block_types_per_layer=(
            ("SDCascadeResBlock", "SDCascadeTimestepBlock"),
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
        ),
        clip_text_pooled_in_channels=TINY_HIDDEN,
        effnet_in_channels=16,
        pixel_mapper_in_channels=3,
        kernel_size=3,
        dropout=(0.0, 0.0),
        self_attn=True,
        timestep_conditioning_type=("sca",),
        switch_level=None,
    ).eval()


def _image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=TINY_HIDDEN, intermediate_size=37, projection_dim=TINY_HIDDEN,
                              num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                              hidden_act="gelu")
    return CLIPVisionModelWithProjection(config).eval()


def _feature_extractor():
    from .references import image_processor_class

    return image_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _vqgan():
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel

    return PaellaVQModel(
        in_channels=3, out_channels=3, levels=2, bottleneck_blocks=1, embed_dim=16, latent_channels=4,
        num_vq_embeddings=64,
    ).eval()


def _model_card(partner_field: str, partner: str, title: str) -> str:
    return (
        f"---\npipeline_tag: text-to-image\nlicense: other\n{partner_field}:\n- {partner}\n---\n"
        f"# {title}\n\n{title.split()[0].capitalize()} random-weight Stable Cascade {title.split()[-1]} built offline "
        "for tests. "
        "Its images are noise.\n"
    )


# The published architectures (diffusers' scripts/convert_stable_cascade.py) and the CLIP
# ViT-bigG-14 text tower with projection. Each is a dict of constructor arguments.
FULL_PRIOR = dict(
    in_channels=16, out_channels=16, timestep_ratio_embedding_dim=64, patch_size=1, conditioning_dim=2048,
    block_out_channels=(2048, 2048), num_attention_heads=(32, 32), down_num_layers_per_block=(8, 24),
    up_num_layers_per_block=(24, 8), down_blocks_repeat_mappers=(1, 1), up_blocks_repeat_mappers=(1, 1),
    block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),) * 2,
    clip_text_in_channels=1280, clip_text_pooled_in_channels=1280, clip_image_in_channels=768, clip_seq=4,
    kernel_size=3, dropout=(0.1, 0.1), self_attn=True, timestep_conditioning_type=("sca", "crp"),
    switch_level=(False,),
)
FULL_DECODER = dict(
    in_channels=4, out_channels=4, timestep_ratio_embedding_dim=64, patch_size=2, conditioning_dim=1280,
    block_out_channels=(320, 640, 1280, 1280), down_num_layers_per_block=(2, 6, 28, 6),
    up_num_layers_per_block=(6, 28, 6, 2), down_blocks_repeat_mappers=(1, 1, 1, 1),
    up_blocks_repeat_mappers=(3, 3, 2, 2), num_attention_heads=(0, 0, 20, 20),
    block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock"),) * 2
    + (("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),) * 2,
    clip_text_pooled_in_channels=1280, clip_seq=4, effnet_in_channels=16, pixel_mapper_in_channels=3,
    kernel_size=3, dropout=(0.0, 0.0, 0.1, 0.1), self_attn=True, timestep_conditioning_type=("sca",),
    switch_level=None,
)
FULL_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, projection_dim=1280, num_hidden_layers=32,
    num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
)
# Shards of at most this size, like the published repos' large components.
FULL_SHARD = "2GB"


def full_text_encoder_config(bos: int = 49406, eos: int = 49407):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**FULL_TEXT_ENCODER, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)


def full_models(device: str = "meta") -> dict:
    """The four full-size components, built on ``device`` (``meta``: no memory, for counting)."""
    import torch
    from diffusers import StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
    from transformers import CLIPTextModelWithProjection

    with torch.device(device):
        return {
            "text_encoder": CLIPTextModelWithProjection(full_text_encoder_config()),
            "prior": StableCascadeUNet(**FULL_PRIOR),
            "decoder": StableCascadeUNet(**FULL_DECODER),
            "vqgan": PaellaVQModel(),
        }


def build_full_pair(root: str | Path, seed: int = 0, on_status=None) -> tuple[Path, Path]:
    """Write a full-size random-weight pair under ``root`` in the published layout; return both folders.

    Each component is built directly in bf16 (the default dtype is switched
    while it is built, so there is never an fp32 copy), saved in shards, and
    freed before the next one: the peak is the largest component, the prior
    (~7.2 GB). The decoder folder's unused text encoder is a hard link to the
    prior's (a copy where links are not possible).
    """
    import gc
    import os
    import shutil

    import torch
    from diffusers import StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    say = on_status or (lambda message: None)
    root = Path(root)
    prior_dir, decoder_dir = _write_layout(root)
    tokenizer = CLIPTokenizer.from_pretrained(prior_dir / "tokenizer")
    torch.manual_seed(seed)
    builders = [
        ("text_encoder", prior_dir / "text_encoder",
         lambda: CLIPTextModelWithProjection(full_text_encoder_config(tokenizer.bos_token_id, tokenizer.eos_token_id))),
        ("prior", prior_dir / "prior", lambda: StableCascadeUNet(**FULL_PRIOR)),
        ("decoder", decoder_dir / "decoder", lambda: StableCascadeUNet(**FULL_DECODER)),
        ("vqgan", decoder_dir / "vqgan", lambda: PaellaVQModel()),
    ]
    previous = torch.get_default_dtype()
    for name, folder, build in builders:
        say(f"building the full-size {name} (random bf16 weights)")
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.no_grad():
                model = build().eval()
        finally:
            torch.set_default_dtype(previous)
        model.save_pretrained(folder, max_shard_size=FULL_SHARD)
        del model
        gc.collect()
    say("building the full-size EfficientNet encoder (random fp32 weights)")
    build_full_effnet(root, seed)
    # The decoder repo ships its own copy of the text encoder; the app never loads it.
    target = decoder_dir / "text_encoder"
    target.mkdir(parents=True, exist_ok=True)
    for file in (prior_dir / "text_encoder").iterdir():
        if (target / file.name).exists():
            (target / file.name).unlink()
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)
    return prior_dir, decoder_dir


def _write_layout(root: Path, size: str = "full-size") -> tuple[Path, Path]:
    """Everything but the weights: tokenizers, schedulers, model indexes and cards."""
    from diffusers import DDPMWuerstchenScheduler

    prior_dir = root / PRIOR_NAME
    decoder_dir = root / DECODER_NAME
    _write_tokenizer(prior_dir / "tokenizer")
    _write_tokenizer(decoder_dir / "tokenizer")
    DDPMWuerstchenScheduler().save_pretrained(prior_dir / "scheduler")
    DDPMWuerstchenScheduler().save_pretrained(decoder_dir / "scheduler")
    _write_json(prior_dir / "model_index.json", _PRIOR_INDEX)
    _write_json(decoder_dir / "model_index.json", _DECODER_INDEX)
    (prior_dir / "README.md").write_text(
        _model_card("decoder", str(decoder_dir.resolve()), f"{size} prior"), encoding="utf-8"
    )
    (decoder_dir / "README.md").write_text(
        _model_card("prior", str(prior_dir.resolve()), f"{size} decoder"), encoding="utf-8"
    )
    return prior_dir, decoder_dir


_PRIOR_INDEX = {
    "_class_name": "StableCascadePriorPipeline",
    "_diffusers_version": "0.27.0",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "prior": ["diffusers", "StableCascadeUNet"],
    "resolution_multiple": 42.67,
    "scheduler": ["diffusers", "DDPMWuerstchenScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
}
_DECODER_INDEX = {
    "_class_name": "StableCascadeDecoderPipeline",
    "_diffusers_version": "0.27.0",
    "decoder": ["diffusers", "StableCascadeUNet"],
    "latent_dim_scale": 10.67,
    "scheduler": ["diffusers", "DDPMWuerstchenScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "vqgan": ["wuerstchen", "PaellaVQModel"],
}


def build_tiny_pair(root: str | Path, seed: int = 0, image_encoder: bool = False) -> tuple[Path, Path]:
    """Write a tiny random-weight prior/decoder pair under ``root``; return both folders.

    The prior's model card names its decoder with the published decoder id,
    like the real card, and the decoder's card names the prior. A tiny
    EfficientNet encoder for image to image lies beside them
    (``root/effnet_encoder.safetensors``, see :func:`build_tiny_effnet`), and
    tiny ControlNets in ``root/controlnet/`` (:func:`build_tiny_controlnet`). With
    ``image_encoder`` the prior folder also holds a tiny CLIP image encoder
    and its feature extractor (as the base Stable Cascade prior repo does), for
    image remix.
    """
    import torch
    from diffusers import DDPMWuerstchenScheduler
    from transformers import CLIPTokenizer

    root = Path(root)
    prior_dir = root / PRIOR_NAME
    decoder_dir = root / DECODER_NAME
    torch.manual_seed(seed)

    vocab_size = _write_tokenizer(prior_dir / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(prior_dir / "tokenizer")
    text_encoder = _text_encoder(vocab_size, tokenizer.bos_token_id, tokenizer.eos_token_id)
    text_encoder.save_pretrained(prior_dir / "text_encoder")
    _prior_unet().save_pretrained(prior_dir / "prior")
    DDPMWuerstchenScheduler().save_pretrained(prior_dir / "scheduler")
    if image_encoder:  # its own random stream: the other components stay the same with or without it
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            _image_encoder().save_pretrained(prior_dir / "image_encoder")
        _feature_extractor().save_pretrained(prior_dir / "feature_extractor")
    encoder_entries = {"feature_extractor": ["transformers", "CLIPImageProcessor"],
                       "image_encoder": ["transformers", "CLIPVisionModelWithProjection"]} if image_encoder else {}
    _write_json(prior_dir / "model_index.json", {**_PRIOR_INDEX, **encoder_entries})
    (prior_dir / "README.md").write_text(
        _model_card("decoder", str(decoder_dir.resolve()), "tiny prior"), encoding="utf-8"
    )

    # The decoder repo ships a text encoder too (its own copy of CLIP); the app
    # never loads it, and the tiny one is here only to match the layout.
    _write_tokenizer(decoder_dir / "tokenizer")
    _text_encoder(vocab_size, tokenizer.bos_token_id, tokenizer.eos_token_id).save_pretrained(
        decoder_dir / "text_encoder"
    )
    _decoder_unet().save_pretrained(decoder_dir / "decoder")
    _vqgan().save_pretrained(decoder_dir / "vqgan")
    DDPMWuerstchenScheduler().save_pretrained(decoder_dir / "scheduler")
    _write_json(decoder_dir / "model_index.json", _DECODER_INDEX)
    (decoder_dir / "README.md").write_text(
        _model_card("prior", str(prior_dir.resolve()), "tiny decoder"), encoding="utf-8"
    )
    # Image to image's encoder, beside the two folders (the engine finds it there); its own random
    # stream, so the pair's weights are the same with or without it.
    build_tiny_effnet(root, seed + 2)
    # Tiny ControlNets in the Hub repo's layout (root/controlnet/<name>.safetensors), found there the same way.
    for offset, kind in enumerate(("canny", "inpaint", "sr")):
        build_tiny_controlnet(root / "controlnet", kind, seed + 3 + offset)
    return prior_dir, decoder_dir


EFFNET_FILE = "effnet_encoder.safetensors"  # the published name (root of stabilityai/stable-cascade)


def _calibrate(model, images: int, side: int, generator, channels: int = 3) -> None:
    """Set every BatchNorm's running statistics from smooth random images, as training would have.

    torch's fresh BatchNorms hold mean 0 and variance 1, so a random network's
    activations drift in scale from layer to layer; with measured statistics the
    latent comes out near mean 0 and std 1, like the trained encoder's.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(images):
            coarse = torch.rand(4, channels, side // 16, side // 16, generator=generator)
            model(torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear"))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    model.eval()


def build_tiny_effnet(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random EfficientNet encoder (``effnet.TINY``, Stability's key layout) into ``folder``.

    Its BatchNorm statistics are measured on random images, so its latents
    have about the trained encoder's scale. Returns the file's path.
    """
    import torch

    from .effnet import TINY, EfficientNetEncoder, save_effnet

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EfficientNetEncoder(TINY)
        _calibrate(model, 4, 128, torch.Generator().manual_seed(seed))
    return save_effnet(model, Path(folder) / EFFNET_FILE)


def build_full_effnet(folder: str | Path, seed: int = 0) -> Path:
    """Write a full-size random EfficientNet encoder (EfficientNetV2-S + mapper) into ``folder``.

    fp32 like the published file (about 81 MB, the same keys and shapes);
    its BatchNorms keep torch's fresh statistics. Returns the file's path.
    """
    import torch

    from .effnet import V2_S, EfficientNetEncoder, save_effnet

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EfficientNetEncoder(V2_S)
    return save_effnet(model, Path(folder) / EFFNET_FILE)


def training_init_weight(name: str, shape, shrink: float, generator):
    """The fp32 weight Stability's training code draws for the Linear or Conv2d layer ``name`` of a UNet.

    ``shrink`` is ``sqrt(1 / sum(down_num_layers_per_block))``, the factor on
    the ResBlock output projections. diffusers keeps this scheme in
    ``StableCascadeUNet._init_weights`` but never calls it, so the pairs above
    carry torch's default init instead. What matters here is scale: those
    projections start ``shrink`` times smaller than the other layers (std
    ~0.0025 in the full-size prior), and the fine-tuned published weights
    descend from them. Attention q/k/v are drawn as one
    ``nn.MultiheadAttention`` in-projection, as the original code has them.
    """
    import math

    import torch

    leaf = name.rsplit(".", 1)[-1]
    if name.startswith(("clip_txt_pooled_mapper", "clip_txt_mapper", "clip_img_mapper", "effnet_mapper",
                        "pixels_mapper")):
        return torch.empty(shape).normal_(0.0, 0.02, generator=generator)
    if name == "clf.1" or (leaf == "mapper" and "_blocks." in name):  # outputs and timestep gates start at zero
        return torch.zeros(shape)
    fan_in = math.prod(shape[1:])
    fan_out = shape[0] * math.prod(shape[2:]) * (3 if leaf in ("to_q", "to_k", "to_v") else 1)
    gain = 0.02 if name == "embedding.1" else 1.0
    if name.endswith(".channelwise.4"):
        gain = shrink
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def controlnet_file_name(kind: str) -> str:
    """The published file name of a ControlNet of ``kind`` (``inpainting.safetensors`` for inpaint...)."""
    from .controlnet import HUB_FILES

    return Path(HUB_FILES[kind]).name


def build_tiny_controlnet(folder: str | Path, kind: str, seed: int = 0) -> Path:
    """Write a tiny random ControlNet of ``kind`` (canny, inpaint, sr) for the tiny pair's prior into ``folder``.

    Stability's key layout with a smaller table (in the file's metadata): a
    tiny EfficientNet backbone (or super-resolution's 1x1 stack) and heads
    for ResBlock calls 0, 2 and 3 of the tiny prior's 4. Returns the file's path.
    """
    import torch

    from .controlnet import ControlNet, save_controlnet, tiny_config

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ControlNet(tiny_config(kind, TINY_HIDDEN))
        if kind != "sr":
            _calibrate(model.backbone, 4, 128, torch.Generator().manual_seed(seed), model.config.c_in)
    return save_controlnet(model, Path(folder) / controlnet_file_name(kind))


def build_full_controlnet(folder: str | Path, kind: str, seed: int = 0) -> Path:
    """Write a full-size random ControlNet of ``kind`` in the published layout (fp32, as published)."""
    import torch

    from .controlnet import ControlNet, full_config, save_controlnet

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ControlNet(full_config(kind))
    return save_controlnet(model, Path(folder) / controlnet_file_name(kind))
