"""The paper's pseudo-label path: Grounding DINO boxes from appearance prompts, SAM masks.

docs/method.md (APPG), per image:

1. one Grounding DINO query per prompt, caption ``"dark oval ."``; a query (box) is
   kept when its highest token probability exceeds ``box_threshold`` (as in Grounding
   DINO's own ``predict``) and at least one word-piece of the prompt itself exceeds
   ``text_threshold`` (i.e. the phrase Grounding DINO would print is not empty);
2. the boxes of all prompts are pooled and suppressed with NMS (IoU ``nms_iou``);
   optionally re-ranked with CLIP (:mod:`busseg.pseudo.clip_rerank`); the ``top_k``
   highest-scoring boxes are kept (default 1);
3. SAM is prompted with each kept box, ``multimask_output=True``, and the mask with
   the highest predicted IoU is kept; with ``top_k > 1`` the label is the union;
4. the area filter (foreground <= ``min_area_fraction`` of the image -> invalid).

The score of a label is the (re-ranked) score of its best box; an image without any
box gets an invalid label with reason ``"no_box"``. The greyscale image is replicated
to three channels for both models.

Efficiency: the Grounding DINO image backbone runs once per image (not once per
prompt), its transformer once per prompt over a batch of images of one shape, and
the text features once per labeler; the SAM image embedding is computed exactly once
per image whatever the number of prompts and boxes, and
:meth:`GroundedSamLabeler.label_batch` runs the SAM image encoder on a whole chunk of
images at once.

Weights are never downloaded here: the labeler first checks the configured checkpoint
files (:mod:`busseg.pseudo.weights`), then builds each model once.
"""
from __future__ import annotations

import contextlib
import io
import logging
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert, nms

from busseg.errors import ConfigError, DataError
from busseg.pseudo.base import PseudoLabel, apply_area_filter, invalid_label
from busseg.pseudo.clip_rerank import ClipReranker, combine_scores
from busseg.pseudo.grounded_sam_options import GroundedSamOptions  # also re-exported
from busseg.pseudo.weights import OFFICIAL_WEIGHTS, WeightFile, expected_weight, verify_weight_file
from busseg.runtime import resolve_device

logger = logging.getLogger(__name__)

# Keys present in the official Grounding DINO checkpoint that the model built by
# groundingdino-py does not have (its own loader uses strict=False and prints them):
# a training-only label embedding, and BERT's position-id buffer, which newer
# transformers versions no longer save.
_IGNORABLE_DINO_KEYS = frozenset({"label_enc.weight", "bert.embeddings.position_ids"})
_HUB_TEXT_ENCODERS = ("bert-base-uncased",)


# --------------------------------------------------------------------------- #
# Pure selection logic (unit-tested without models)
# --------------------------------------------------------------------------- #


@dataclass
class Detections:
    """Candidate boxes of one image: ``boxes`` (n, 4) xyxy in pixels, ``scores`` (n,),
    ``prompt_index`` (n,) the prompt that produced each box."""

    boxes: np.ndarray
    scores: np.ndarray
    prompt_index: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index``, in that order."""
        return Detections(self.boxes[index], self.scores[index], self.prompt_index[index])


def caption_for(prompt: str) -> str:
    """Grounding DINO caption for a prompt: lower case, ending with ``" ."``."""
    text = prompt.lower().strip()
    return text if text.endswith(".") else f"{text} ."


def filter_queries(
    probabilities: torch.Tensor,
    boxes_cxcywh: torch.Tensor,
    phrase_tokens: torch.Tensor,
    box_threshold: float,
    text_threshold: float,
    image_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one query batch that pass both thresholds.

    ``probabilities`` (queries, tokens) are sigmoid token scores, ``boxes_cxcywh``
    (queries, 4) normalised boxes, ``phrase_tokens`` (tokens,) marks the prompt's own
    word-pieces (not [CLS], [SEP], "."). A query is kept when its highest token score
    is > ``box_threshold`` and some phrase token scores > ``text_threshold``.
    Returns xyxy boxes in pixels of ``image_size = (height, width)``, clipped to the
    image, and the scores (the highest token score, as Grounding DINO reports).
    """
    scores = probabilities.max(dim=1).values
    phrase_ok = (probabilities[:, phrase_tokens] > text_threshold).any(dim=1)  # False without phrase tokens
    keep = (scores > box_threshold) & phrase_ok
    height, width = image_size
    scale = boxes_cxcywh.new_tensor([width, height, width, height])
    boxes = box_convert(boxes_cxcywh[keep] * scale, in_fmt="cxcywh", out_fmt="xyxy")
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes.double().cpu().numpy(), scores[keep].double().cpu().numpy()


def pool_and_suppress(per_prompt: Sequence[tuple[np.ndarray, np.ndarray]], nms_iou: float) -> Detections:
    """Pool the boxes of all prompts and apply NMS; result sorted by decreasing score."""
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b, _ in per_prompt]
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for _, s in per_prompt]
    prompt_index = [np.full(len(s), i, dtype=np.int64) for i, s in enumerate(scores)]
    if not boxes or sum(len(s) for s in scores) == 0:
        return Detections.empty()
    pooled = Detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(prompt_index))
    keep = nms(torch.from_numpy(pooled.boxes), torch.from_numpy(pooled.scores), nms_iou).numpy()
    return pooled.take(keep)  # torchvision returns the kept indices by decreasing score


def top_k_order(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the ``top_k`` highest scores, highest first (stable for ties)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:top_k]


def rank_candidates(
    per_prompt: Sequence[tuple[np.ndarray, np.ndarray]],
    nms_iou: float,
    top_k: int,
    clip_scores: Callable[[np.ndarray], np.ndarray] | None = None,
    rerank_weight: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool, NMS, optional re-rank, top-k: the kept (boxes, scores), best first.

    ``clip_scores`` maps the NMS survivors' boxes to CLIP scores; the re-ranked score
    is :func:`busseg.pseudo.clip_rerank.combine_scores` of detector and CLIP score.
    """
    candidates = pool_and_suppress(per_prompt, nms_iou)
    if len(candidates) == 0:
        return candidates.boxes, candidates.scores
    scores = candidates.scores
    if clip_scores is not None:
        scores = combine_scores(scores, clip_scores(candidates.boxes), rerank_weight)
    keep = top_k_order(scores, top_k)
    return candidates.boxes[keep], np.asarray(scores)[keep]


def select_best_masks(masks: np.ndarray, iou_predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per box, the multimask output with the highest predicted IoU.

    ``masks`` (boxes, candidates, H, W), ``iou_predictions`` (boxes, candidates);
    returns masks (boxes, H, W) and their predicted IoUs (boxes,).
    """
    best = np.argmax(iou_predictions, axis=1)
    rows = np.arange(len(best))
    return masks[rows, best], iou_predictions[rows, best]


def assemble_label(
    shape: tuple[int, int],
    boxes: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    min_area_fraction: float,
) -> PseudoLabel:
    """Union of the kept boxes' masks, scored by the best box, then the area filter."""
    if len(scores) == 0:
        return invalid_label(shape, "no_box")
    mask = np.asarray(masks, dtype=bool).reshape(-1, *shape).any(axis=0)
    x0, y0, x1, y1 = boxes[0]
    box = (int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
    label = PseudoLabel(mask=mask, score=float(scores[0]), valid=True, box=box)
    return apply_area_filter(label, min_area_fraction)


# --------------------------------------------------------------------------- #
# Model loading
# --------------------------------------------------------------------------- #


def _sam_builder(model_type: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from segment_anything import sam_model_registry

        return sam_model_registry[model_type](checkpoint=None)

    return build


# SAM architectures by ``sam_model_type``. A builder returns the model with random
# weights; the checkpoint is loaded by this module. Add an entry to use another
# architecture with the same interface (tests register a tiny one).
SAM_BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    name: _sam_builder(name) for name in ("vit_b", "vit_l", "vit_h")
}


def resolve_dino_config(name_or_path: str) -> Path:
    """A Grounding DINO config: an existing file, or the name of one shipped with groundingdino."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    import groundingdino

    shipped_dir = Path(groundingdino.__file__).parent / "config"
    shipped = shipped_dir / path.name
    if path.name == str(name_or_path) and shipped.is_file():
        return shipped
    available = sorted(p.name for p in shipped_dir.glob("*.py") if p.name != "__init__.py")
    raise ConfigError(
        "dino_config",
        f"{name_or_path!r} is neither a config file nor a shipped config; shipped: {', '.join(available)}",
    )


def load_checkpoint(path: str | Path, trusted: bool) -> Any:
    """``torch.load`` a checkpoint on the CPU, safely.

    Tensors-only unpickling first (``weights_only=True``). Only a file whose SHA-256
    matched an official checkpoint (``trusted``) may fall back to full unpickling,
    which can run code stored in the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        if not detail:  # not a checkpoint that merely holds objects: a corrupt or foreign file
            raise DataError(path, "not a readable PyTorch checkpoint (unpickling failed)") from None
        if not trusted:
            raise DataError(
                path,
                "holds Python objects besides tensors and is not a verified official checkpoint, "
                f"so it is not unpickled ({detail.split(' was not')[0]}); save it as {{'model': state_dict}} "
                "or as a plain state_dict",
            ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable PyTorch checkpoint: {str(exc).splitlines()[0]}") from None
    logger.info("%s: verified official checkpoint, loading with weights_only=False", path)
    return torch.load(path, map_location="cpu", weights_only=False)  # intended: only after its SHA-256 matched an official checkpoint


def _state_dict_of(checkpoint: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in an official-format ``{"model": ...}`` or a plain checkpoint."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(path, "is not a state dict nor a {'model': state_dict} checkpoint")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    what: str,
    ignorable: frozenset[str] = frozenset(),
) -> None:
    """Load ``state`` into ``model``; every parameter must be covered, shapes must match."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: wrong architecture for this file
        first = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line][:2]
        raise DataError(path, f"does not fit {what}: {'; '.join(first) or exc}") from None
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise DataError(
            path,
            f"does not fit {what}: {len(result.missing_keys)} parameters missing from the checkpoint (e.g. {shown})",
        )
    unexpected = [k for k in result.unexpected_keys if k not in ignorable]
    if unexpected:
        logger.warning("%s: %d checkpoint entries unused by %s (e.g. %s)", path, len(unexpected), what, unexpected[:3])


@contextlib.contextmanager
def _quiet_library(stdout: bool = False) -> Iterator[None]:
    """Silence deprecation warnings of groundingdino's dependencies (and its prints)."""
    prints = contextlib.redirect_stdout(io.StringIO()) if stdout else contextlib.nullcontext()
    with warnings.catch_warnings(), prints:
        for pattern in (".*torch.cuda.amp.autocast.*", ".*`device` argument is deprecated.*", ".*torch.meshgrid.*"):
            warnings.filterwarnings("ignore", message=pattern)
        warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
        yield


# --------------------------------------------------------------------------- #
# Grounding DINO
# --------------------------------------------------------------------------- #


@dataclass
class _Text:
    """One encoded caption (batch of 1) and the positions of the prompt's own tokens."""

    text_dict: dict[str, torch.Tensor]
    phrase_tokens: torch.Tensor  # (tokens,) bool


@dataclass
class _ImageFeatures:
    """Multi-scale image features of a batch, as GroundingDINO's transformer takes them."""

    srcs: list[torch.Tensor]
    masks: list[torch.Tensor]
    poss: list[torch.Tensor]


class GroundingDinoDetector:
    """Grounding DINO with the image backbone run once per image, images batched.

    The forward pass is ``GroundingDINO.forward`` of groundingdino-py split in two:
    image features once for a batch of images, then the text-conditioned transformer
    once per prompt for the whole batch. Only the last decoder layer's outputs are
    computed (the auxiliary outputs serve training only).

    Prompts are not batched with each other on purpose: groundingdino's text
    self-attention repeats its per-caption attention mask head-major
    (``src_mask.repeat(nhead, 1, 1)``) where ``nn.MultiheadAttention`` expects
    batch-major order, so a batch of captions of different token lengths gets the
    wrong masks. A batch of images with one caption has identical masks and is exact.
    """

    def __init__(
        self,
        config: Path,
        checkpoint: str | Path,
        text_encoder: str,
        device: torch.device,
        image_size: int = 800,
        max_size: int = 1333,
        trusted: bool = False,
    ) -> None:
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

        args = SLConfig.fromfile(str(config))
        args.device = str(device)
        args.text_encoder_type = text_encoder
        # Activation checkpointing only saves memory when training.
        args.use_checkpoint = False
        args.use_transformer_ckpt = False
        try:
            with _quiet_library(stdout=True):  # groundingdino prints the text encoder name
                model = build_model(args)
        except OSError as exc:  # transformers could not find the text encoder
            raise ConfigError(
                "text_encoder",
                f"could not load text encoder {text_encoder!r}: {exc}. 'bert-base-uncased' is fetched once "
                "into the Hugging Face cache (network needed); offline, give a local folder holding it",
            ) from None
        state = _state_dict_of(load_checkpoint(checkpoint, trusted), checkpoint)
        load_state(model, state, checkpoint, f"Grounding DINO config {config.name}", _IGNORABLE_DINO_KEYS)
        self.model = model.to(device).eval()
        self.device = device
        self.image_size = image_size
        self.max_size = max_size
        self._text_cache: dict[str, _Text] = {}

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Grounding DINO's demo transform of a greyscale image: resize, to tensor, normalise."""
        import groundingdino.datasets.transforms as T
        from PIL import Image

        transform = T.Compose(
            [
                T.RandomResize([self.image_size], max_size=self.max_size),  # one size: deterministic
                T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        tensor, _ = transform(Image.fromarray(image).convert("RGB"), None)
        return tensor

    def detect(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """For each image (all of one shape), for each prompt: (boxes xyxy pixels, scores)."""
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise ValueError(f"detect() needs images of one shape, got {sorted(shapes)}")
        batch = torch.stack([self.preprocess(image) for image in images])
        outputs = self.forward(batch, prompts)
        results: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
        for prompt, (logits, boxes) in zip(prompts, outputs):
            phrase_tokens = self._encode_text(prompt).phrase_tokens
            probabilities = logits.sigmoid()[..., : len(phrase_tokens)].cpu()
            for b, image in enumerate(images):
                results[b].append(
                    filter_queries(
                        probabilities[b], boxes[b].cpu(), phrase_tokens, box_threshold, text_threshold, image.shape[:2]
                    )
                )
        return results

    @torch.no_grad()
    def forward(self, batch: torch.Tensor, prompts: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per prompt: logits (B, queries, 256) and normalised cxcywh boxes (B, queries, 4).

        ``batch`` (B, 3, h, w) holds preprocessed images of one size.
        """
        with _quiet_library():
            image = self._encode_image(batch.to(self.device))
            return [self._decode(image, self._encode_text(prompt), batch.shape[0]) for prompt in prompts]

    def _encode_text(self, prompt: str) -> _Text:
        """Encode a caption once (text features do not depend on the image)."""
        if prompt not in self._text_cache:
            with torch.no_grad(), _quiet_library():
                self._text_cache[prompt] = self._encode_caption(caption_for(prompt))
        return self._text_cache[prompt]

    def _encode_caption(self, caption: str) -> _Text:
        from groundingdino.models.GroundingDINO.bertwarper import (
            generate_masks_with_special_tokens_and_transfer_map,
        )

        model = self.model
        tokenized = model.tokenizer([caption], return_tensors="pt").to(self.device)
        if tokenized["input_ids"].shape[1] > model.max_text_len:
            raise ConfigError("prompts", f"{caption!r} is longer than {model.max_text_len} tokens")
        attention, position_ids, _ = generate_masks_with_special_tokens_and_transfer_map(
            tokenized, model.specical_tokens, model.tokenizer
        )
        if model.sub_sentence_present:
            encoder_input = {k: v for k, v in tokenized.items() if k != "attention_mask"}
            encoder_input["attention_mask"] = attention
            encoder_input["position_ids"] = position_ids
        else:
            encoder_input = dict(tokenized)
        encoded = model.feat_map(model.bert(**encoder_input)["last_hidden_state"])
        token_mask = tokenized["attention_mask"].bool()
        special = torch.isin(tokenized["input_ids"], torch.as_tensor(model.specical_tokens, device=self.device))
        text_dict = {
            "encoded_text": encoded,
            "text_token_mask": token_mask,
            "position_ids": position_ids,
            "text_self_attention_masks": attention,
        }
        return _Text(text_dict=text_dict, phrase_tokens=(token_mask & ~special)[0].cpu())

    def _encode_image(self, batch: torch.Tensor) -> _ImageFeatures:
        """Backbone and input projections (the image-only part of GroundingDINO.forward)."""
        from groundingdino.util.misc import NestedTensor, nested_tensor_from_tensor_list

        model = self.model
        samples = nested_tensor_from_tensor_list(list(batch))
        features, poss = model.backbone(samples)
        srcs, masks = [], []
        for level, feature in enumerate(features):
            src, mask = feature.decompose()
            srcs.append(model.input_proj[level](src))
            masks.append(mask)
        # Extra, coarser levels from the last backbone level (as in GroundingDINO.forward).
        for level in range(len(srcs), model.num_feature_levels):
            src = model.input_proj[level](features[-1].tensors if level == len(features) else srcs[-1])
            mask = torch.nn.functional.interpolate(samples.mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
            poss.append(model.backbone[1](NestedTensor(src, mask)).to(src.dtype))
            srcs.append(src)
            masks.append(mask)
        return _ImageFeatures(srcs=srcs, masks=masks, poss=poss)

    def _decode(self, image: _ImageFeatures, text: _Text, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer and heads for one caption over the image batch (last decoder layer)."""
        from groundingdino.util.misc import inverse_sigmoid

        model = self.model
        text_dict = {k: v.repeat(n_images, *([1] * (v.dim() - 1))) for k, v in text.text_dict.items()}
        hs, reference, _, _, _ = model.transformer(
            image.srcs, image.masks, None, image.poss, None, None, text_dict
        )
        last = len(hs) - 1
        boxes = (model.bbox_embed[last](hs[last]) + inverse_sigmoid(reference[last])).sigmoid()
        logits = model.class_embed[last](hs[last], text_dict)
        return logits, boxes


# --------------------------------------------------------------------------- #
# SAM
# --------------------------------------------------------------------------- #


@dataclass
class SamEmbedding:
    """SAM image embedding of one image and the sizes needed to map boxes and masks."""

    features: torch.Tensor  # (1, C, h, w)
    input_size: tuple[int, int]
    original_size: tuple[int, int]


class SamSegmenter:
    """SamPredictor's logic, with the image encoder run once per image (or per chunk)."""

    def __init__(self, model_type: str, checkpoint: str | Path, device: torch.device, trusted: bool = False) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        sam = SAM_BUILDERS[model_type]()
        state = _state_dict_of(load_checkpoint(checkpoint, trusted), checkpoint)
        load_state(sam, state, checkpoint, f"SAM {model_type}")
        self.sam = sam.to(device).eval()
        self.device = device
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> list[SamEmbedding]:
        """Embeddings of greyscale images, from ONE image-encoder call for all of them."""
        if not images:
            return []
        inputs, sizes = [], []
        for image in images:
            rgb = np.repeat(image[..., None], 3, axis=2)
            resized = self.transform.apply_image(rgb)
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
            inputs.append(self.sam.preprocess(tensor))  # normalise and pad to the square input
            sizes.append((tuple(resized.shape[:2]), tuple(image.shape[:2])))
        features = self.sam.image_encoder(torch.cat(inputs))
        return [
            SamEmbedding(features[i : i + 1], input_size, original_size)
            for i, (input_size, original_size) in enumerate(sizes)
        ]

    @torch.no_grad()
    def segment(self, embedding: SamEmbedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Multimask prediction per box: masks (boxes, 3, H, W) bool, predicted IoUs (boxes, 3)."""
        prompt = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), device=self.device)
        prompt = self.transform.apply_boxes_torch(prompt, embedding.original_size)
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=prompt, masks=None)
        low_res, iou_predictions = self.sam.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        logits = self.sam.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
        return (logits > self.sam.mask_threshold).cpu().numpy(), iou_predictions.float().cpu().numpy()


# --------------------------------------------------------------------------- #
# The labeler
# --------------------------------------------------------------------------- #


class GroundedSamLabeler:
    """Grounding DINO + SAM pseudo labels (see the module docstring).

    Construction first verifies the weight files (before any model is built), then
    loads each model once. ``weight_table`` replaces the table of official
    checkpoints (tests inject the digests of their tiny files).
    """

    def __init__(self, options: GroundedSamOptions, weight_table: Mapping[str, WeightFile] | None = None) -> None:
        self.options = options
        table = OFFICIAL_WEIGHTS if weight_table is None else weight_table
        dino_trusted = verify_weight_file(
            options.dino_checkpoint,
            expected_weight(options.dino_checkpoint, table),
            option="dino_checkpoint",
            check_contents=options.verify_checksums,
        )
        sam_trusted = verify_weight_file(
            options.sam_checkpoint,
            expected_weight(options.sam_checkpoint, table),
            option="sam_checkpoint",
            check_contents=options.verify_checksums,
        )
        config = resolve_dino_config(options.dino_config)
        _check_text_encoder(options.text_encoder)
        if options.sam_model_type not in SAM_BUILDERS:
            raise ConfigError(
                "sam_model_type", f"unknown {options.sam_model_type!r}; available: {', '.join(SAM_BUILDERS)}"
            )
        try:
            self.device = resolve_device(options.device)
        except ConfigError as exc:
            raise ConfigError("device", exc.problem) from None

        self.detector = GroundingDinoDetector(
            config,
            options.dino_checkpoint,
            options.text_encoder,
            self.device,
            options.dino_image_size,
            options.dino_max_size,
            trusted=dino_trusted,
        )
        self.segmenter = SamSegmenter(options.sam_model_type, options.sam_checkpoint, self.device, trusted=sam_trusted)
        self.reranker: ClipReranker | None = None
        if options.rerank == "clip":
            self.reranker = ClipReranker(
                options.clip_model, options.clip_pretrained, options.prompts, options.negative_prompts, self.device
            )

    @property
    def batch_size(self) -> int:
        """Images per model batch (``pseudo.grounded_sam.batch_size``): how many images
        :func:`busseg.pseudo.run.label_dataset` hands :meth:`label_batch` at a time."""
        return self.options.batch_size

    def label(self, image: np.ndarray) -> PseudoLabel:
        """Pseudo label of one uint8 greyscale image (H, W)."""
        return self.label_batch([image])[0]

    def label_batch(self, images: list[np.ndarray]) -> list[PseudoLabel]:
        """Pseudo labels of several images, processed in chunks of ``batch_size``.

        Within a chunk, images of equal shape share one Grounding DINO batch and all
        images with a box share one SAM image-encoder call.
        """
        for index, image in enumerate(images):
            _check_image(image, index)
        labels: list[PseudoLabel] = []
        size = self.options.batch_size
        for start in range(0, len(images), size):
            labels.extend(self._label_chunk(images[start : start + size]))
        return labels

    def rank(
        self, image: np.ndarray, per_prompt: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The kept (boxes, scores) of one image, best first (see :func:`rank_candidates`)."""
        clip_scores = partial(self.reranker.score, image) if self.reranker is not None else None
        opts = self.options
        return rank_candidates(per_prompt, opts.nms_iou, opts.top_k, clip_scores, opts.rerank_weight)

    def _label_chunk(self, images: list[np.ndarray]) -> list[PseudoLabel]:
        detections = self._detect(images)
        ranked = [self.rank(image, per_prompt) for image, per_prompt in zip(images, detections)]
        with_box = [i for i, (_, scores) in enumerate(ranked) if len(scores)]
        embeddings = dict(zip(with_box, self.segmenter.embed([images[i] for i in with_box])))
        labels = []
        for i, image in enumerate(images):
            boxes, scores = ranked[i]
            if i not in embeddings:
                labels.append(invalid_label(image.shape, "no_box"))
                continue
            masks, ious = self.segmenter.segment(embeddings[i], boxes)
            best_masks, _ = select_best_masks(masks, ious)
            labels.append(assemble_label(image.shape, boxes, scores, best_masks, self.options.min_area_fraction))
        return labels

    def _detect(self, images: list[np.ndarray]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Detector output per image, batching images of equal shape together."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        results: list[Any] = [None] * len(images)
        opts = self.options
        for members in groups.values():
            found = self.detector.detect(
                [images[i] for i in members], opts.prompts, opts.box_threshold, opts.text_threshold
            )
            for i, per_prompt in zip(members, found):
                results[i] = per_prompt
        return results


def _check_image(image: np.ndarray, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image {index}: expected a uint8 greyscale array (H, W), got {got}")
    if min(image.shape) < 2:
        raise ValueError(f"image {index}: too small ({image.shape})")


def _check_text_encoder(name: str) -> None:
    """groundingdino-py accepts the hub name bert-base-uncased or a local folder."""
    if name in _HUB_TEXT_ENCODERS:
        return
    if not Path(name).is_dir():
        raise ConfigError(
            "text_encoder",
            f"{name!r} is neither {' / '.join(_HUB_TEXT_ENCODERS)} "
            "nor an existing folder with a BERT model and vocabulary",
        )
