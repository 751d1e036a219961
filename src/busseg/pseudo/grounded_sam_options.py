"""Options of the Grounding DINO + SAM pseudo labeller (``pseudo.grounded_sam`` in params.yaml).

Apart from :mod:`busseg.pseudo.grounded_sam`, which loads torch and torchvision's detection
ops: checking params.yaml (every stage does) reads this dataclass without them. The labeller's
module re-exports :class:`GroundedSamOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass

from busseg.config import check_range
from busseg.errors import ConfigError

@dataclass(frozen=True)
class GroundedSamOptions:
    """Options of :class:`busseg.pseudo.grounded_sam.GroundedSamLabeler` (defaults: docs/method.md's DECISIONs).

    Detector: ``prompts`` (one query each), ``box_threshold``, ``text_threshold``,
    ``nms_iou``, ``top_k``; ``dino_config`` is the name of a config shipped in
    ``groundingdino/config/`` or a path to a config ``.py``; ``text_encoder`` is
    ``"bert-base-uncased"`` (fetched once into the Hugging Face cache; its weights
    are then replaced by the checkpoint's) or a local folder with a BERT config,
    vocabulary and weights; ``dino_image_size`` / ``dino_max_size`` are the resize of
    Grounding DINO's own demo (shorter side 800, longer side at most 1333).
    Segmenter: ``sam_model_type`` (a key of :data:`busseg.pseudo.grounded_sam.SAM_BUILDERS`), ``sam_checkpoint``.
    ``device``: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:N``.
    ``batch_size``: images per chunk in :meth:`GroundedSamLabeler.label_batch`.
    ``verify_checksums``: compare size and SHA-256 of official checkpoint names with
    :data:`busseg.pseudo.weights.OFFICIAL_WEIGHTS` (False: existence only).
    Re-ranking: ``rerank`` ``"none"`` or ``"clip"``, ``rerank_weight`` (weight of the
    CLIP score in the combined score), ``clip_model``, ``clip_pretrained`` (tag, local
    file, or ``""`` for random weights), ``negative_prompts``.
    """

    prompts: tuple[str, ...] = ("dark oval", "dark round", "dark lobulated")
    box_threshold: float = 0.25
    text_threshold: float = 0.20
    nms_iou: float = 0.5
    top_k: int = 1
    min_area_fraction: float = 0.01
    dino_config: str = "GroundingDINO_SwinT_OGC.py"
    dino_checkpoint: str = "models/weights/groundingdino_swint_ogc.pth"
    text_encoder: str = "bert-base-uncased"
    dino_image_size: int = 800
    dino_max_size: int = 1333
    sam_model_type: str = "vit_b"
    sam_checkpoint: str = "models/weights/sam_vit_b_01ec64.pth"
    device: str = "auto"
    batch_size: int = 4
    verify_checksums: bool = True
    rerank: str = "none"
    rerank_weight: float = 0.5
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    negative_prompts: tuple[str, ...] = ("bright", "shadow", "text")

    def __post_init__(self) -> None:
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ConfigError("prompts", f"need at least one non-empty appearance description, got {self.prompts!r}")
        check_range("box_threshold", self.box_threshold, 0.0, 1.0)
        check_range("text_threshold", self.text_threshold, 0.0, 1.0)
        check_range("nms_iou", self.nms_iou, 0.0, 1.0, low_open=True)
        check_range("min_area_fraction", self.min_area_fraction, 0.0, 1.0)
        check_range("rerank_weight", self.rerank_weight, 0.0, 1.0)
        for key in ("top_k", "batch_size", "dino_image_size"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")
        if self.dino_max_size < self.dino_image_size:
            raise ConfigError("dino_max_size", f"must be >= dino_image_size ({self.dino_image_size})")
        if self.rerank not in ("none", "clip"):
            raise ConfigError("rerank", f"must be 'none' or 'clip', got {self.rerank!r}")
