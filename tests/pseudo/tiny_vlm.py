"""Tiny, randomly initialised Grounding DINO, SAM and open_clip models for the tests.

The real checkpoints cannot be downloaded here, so the tests build models with the
same code and the same file formats, only smaller, save them as checkpoint files
and point :class:`GroundedSamOptions` at those files: everything from weight
verification through ``torch.load`` and ``load_state_dict`` to inference then runs
exactly as with the official weights.

* Grounding DINO: the shipped ``GroundingDINO_SwinT_OGC.py`` config with one encoder
  and one decoder layer, few queries, a one-layer BERT (own WordPiece vocabulary,
  saved to a folder used as ``text_encoder``) and a narrow Swin (``tiny_swin``
  patches groundingdino's Swin builder, whose sizes are hard-coded). The checkpoint
  has the official layout ``{"model": state_dict}`` and the two extra entries of the
  official file (``label_enc.weight``, ``bert.embeddings.position_ids``).
* SAM: segment_anything's building blocks at 128 px input, registered in
  :data:`busseg.pseudo.grounded_sam.SAM_BUILDERS` as ``"tiny_test"``.
* open_clip: a two-block ViT registered as the architecture ``"busseg-tiny-clip"``.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

TINY_SAM_TYPE = "tiny_test"
TINY_CLIP_MODEL = "busseg-tiny-clip"

# WordPiece vocabulary: BERT's special tokens first, then the words of the prompts.
_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?",
    "dark", "oval", "round", "lo", "##bul", "##ated", "bright", "shadow", "text", "tumor", "a",
]  # fmt: skip


@dataclass(frozen=True)
class TinyDino:
    """Files of a tiny Grounding DINO: config, checkpoint and text-encoder folder."""

    config: Path
    checkpoint: Path
    text_encoder: Path


def write_text_encoder(folder: Path, hidden_size: int = 32, layers: int = 1) -> Path:
    """Save a tiny BERT (random weights) with its tokenizer to ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(_VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(_VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@contextlib.contextmanager
def tiny_swin() -> Iterator[None]:
    """Make groundingdino build a narrow, one-block-per-stage Swin for "swin_T_224_1k"."""
    import groundingdino.models.GroundingDINO.backbone.backbone as backbone
    from groundingdino.models.GroundingDINO.backbone.swin_transformer import SwinTransformer

    def build(modelname: str, pretrain_img_size: int, **kwargs):  # same signature as the original
        return SwinTransformer(
            pretrain_img_size=pretrain_img_size,
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            window_size=7,
            **kwargs,
        )

    original = backbone.build_swin_transformer
    backbone.build_swin_transformer = build
    try:
        yield
    finally:
        backbone.build_swin_transformer = original


def write_tiny_dino(folder: Path, seed: int = 0) -> TinyDino:
    """Write config, text encoder and checkpoint of a tiny Grounding DINO to ``folder``.

    Call inside :func:`tiny_swin` so that the backbone is the tiny one; the labeler
    that loads the files must be built inside it too.
    """
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    folder.mkdir(parents=True, exist_ok=True)
    text_encoder = write_text_encoder(folder / "bert")
    shipped = Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py"
    text = shipped.read_text()
    for old, new in (
        ("enc_layers = 6", "enc_layers = 1"),
        ("dec_layers = 6", "dec_layers = 1"),
        ("dim_feedforward = 2048", "dim_feedforward = 64"),
        ("num_queries = 900", "num_queries = 30"),
    ):
        assert old in text, f"shipped config changed: {old!r} not found"
        text = text.replace(old, new)
    config = folder / "tiny_dino_cfg.py"
    config.write_text(text)

    args = SLConfig.fromfile(str(config))
    args.device = "cpu"
    args.text_encoder_type = str(text_encoder)
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(None), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation noise of groundingdino's dependencies
        model = build_model(args)
    state = dict(model.state_dict())
    # The two entries the official file has beyond the model (see grounded_sam.py).
    state["label_enc.weight"] = torch.randn(args.dn_labelbook_size + 1, args.hidden_dim)
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    checkpoint = folder / "tiny_groundingdino.pth"
    torch.save({"model": state}, checkpoint)
    return TinyDino(config=config, checkpoint=checkpoint, text_encoder=text_encoder)


def build_tiny_sam() -> torch.nn.Module:
    """A SAM (random weights) from segment_anything's blocks: 128 px input, width 32."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    image_size, patch, width = 128, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=width,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=width,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=width, mlp_dim=64, num_heads=2),
            transformer_dim=width,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def write_tiny_sam(folder: Path, seed: int = 0) -> Path:
    """Save a tiny SAM's state dict (the official SAM files are plain state dicts)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    checkpoint = folder / "tiny_sam.pth"
    torch.save(build_tiny_sam().state_dict(), checkpoint)
    return checkpoint


def register_tiny_clip(folder: Path) -> str:
    """Register a tiny open_clip architecture (config file in ``folder``); returns its name."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    path = folder / f"{TINY_CLIP_MODEL}.json"
    path.write_text(json.dumps(config))
    if TINY_CLIP_MODEL not in open_clip.list_models():
        open_clip.add_model_config(path)
    return TINY_CLIP_MODEL
