"""Optional re-ranking of detector boxes with open_clip (``rerank: clip``).

Grounding DINO's box score says how well a box matches *some* token of the
caption; on ultrasound it also fires on posterior shadows, bright fat lobules and
burned-in text. The re-ranker looks at each candidate crop as CLIP sees it and asks
whether it looks more like the appearance prompts ("dark oval", ...) than like the
negative prompts ("bright", "shadow", "text").

For a crop with CLIP image embedding ``v`` and text embeddings ``t_j`` of the
positive prompts followed by the negative prompts (all L2-normalised),

    p = softmax_j(logit_scale * <v, t_j>),    clip_score = sum of p_j over positive prompts

and the combined score of a box with detector score ``s`` is

    combined = (1 - weight) * s + weight * clip_score,    weight in [0, 1].

``weight = 0`` keeps the detector's ranking; ``weight = 1`` ranks by CLIP alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from busseg.errors import ConfigError

_SCHEMAS = ("hf-hub:", "local-dir:")


def combine_scores(detector: np.ndarray, clip: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * detector + weight * clip`` (see the module docstring)."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError("rerank_weight", f"must be in [0, 1], got {weight}")
    return (1.0 - weight) * np.asarray(detector, dtype=np.float64) + weight * np.asarray(clip, dtype=np.float64)


def crop_boxes(image: np.ndarray, boxes: np.ndarray) -> list[Image.Image]:
    """RGB crops of a greyscale uint8 image for boxes ``(x0, y0, x1, y1)`` in pixels.

    Boxes are rounded outwards and clipped to the image; a degenerate box still
    gives a crop of at least one pixel, so every box gets a score.
    """
    height, width = image.shape[:2]
    crops = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        left = int(np.clip(np.floor(x0), 0, width - 1))
        top = int(np.clip(np.floor(y0), 0, height - 1))
        right = int(np.clip(np.ceil(x1), left + 1, width))
        bottom = int(np.clip(np.ceil(y1), top + 1, height))
        patch = image[top:bottom, left:right]
        crops.append(Image.fromarray(np.ascontiguousarray(patch)).convert("RGB"))
    return crops


class ClipReranker:
    """Scores box crops against positive vs negative prompts with an open_clip model.

    ``model_name`` is an open_clip architecture (``"ViT-B-32"``) or a schema name
    (``"local-dir:/path"``, ``"hf-hub:org/repo"``). ``pretrained`` is an open_clip
    tag (``"laion2b_s34b_b79k"``, downloaded once on a machine with network access),
    a path to a local weights file, or ``None``/``""`` for random weights (tests only).
    The prompt embeddings are computed once here.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None,
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        if not prompts:
            raise ConfigError("prompts", "the CLIP re-ranker needs at least one positive prompt")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.n_positive = len(prompts)
        self.model, self.preprocess, tokenizer = _load_open_clip(model_name, pretrained or None, self.device)
        texts = [*prompts, *negative_prompts]
        with torch.no_grad():
            tokens = tokenizer(texts).to(self.device)
            features = self.model.encode_text(tokens)
            self.text_features = features / features.norm(dim=-1, keepdim=True)
            self.logit_scale = float(self.model.logit_scale.exp())

    @torch.no_grad()
    def score(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Positive-prompt probability mass (in [0, 1]) of each box crop of ``image``."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros(0, dtype=np.float64)
        crops = crop_boxes(image, boxes)
        scores = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.stack([self.preprocess(c) for c in crops[start : start + self.batch_size]])
            features = self.model.encode_image(batch.to(self.device))
            features = features / features.norm(dim=-1, keepdim=True)
            probs = (self.logit_scale * features @ self.text_features.T).softmax(dim=-1)
            scores.append(probs[:, : self.n_positive].sum(dim=-1).double().cpu())
        return torch.cat(scores).numpy()


def _load_open_clip(model_name: str, pretrained: str | None, device: torch.device):
    """Build (model, val transform, tokenizer), turning open_clip's errors into ConfigErrors."""
    import open_clip  # imported here: only needed with rerank: clip

    if not model_name.startswith(_SCHEMAS) and model_name not in open_clip.list_models():
        raise ConfigError(
            "clip_model",
            f"unknown open_clip architecture {model_name!r}; e.g. ViT-B-32, ViT-B-16, RN50 "
            f"(open_clip.list_models() lists {len(open_clip.list_models())})",
        )
    if pretrained and not Path(pretrained).is_file() and not model_name.startswith(_SCHEMAS):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ConfigError(
                "clip_pretrained",
                f"{pretrained!r} is neither a weights file nor a tag of {model_name}; "
                f"tags: {', '.join(tags) or 'none'}",
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # download or file errors from open_clip / huggingface_hub
        raise ConfigError(
            "clip_pretrained",
            f"could not load open_clip {model_name} with pretrained={pretrained!r}: {exc}. "
            "A pretrained tag downloads once and needs network access; offline, give a local weights file.",
        ) from None
    model.eval()
    return model, preprocess, tokenizer
