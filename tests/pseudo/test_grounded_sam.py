from __future__ import annotations

import argparse
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import busseg.pseudo.grounded_sam as gs
from busseg.errors import ConfigError, DataError
from busseg.pseudo.grounded_sam import (
    SAM_BUILDERS,
    GroundedSamLabeler,
    GroundedSamOptions,
    assemble_label,
    caption_for,
    filter_queries,
    load_checkpoint,
    load_state,
    pool_and_suppress,
    rank_candidates,
    resolve_dino_config,
    select_best_masks,
    top_k_order,
)
from busseg.pseudo.weights import OFFICIAL_WEIGHTS, WeightFile

from .tiny_vlm import (
    TINY_SAM_TYPE,
    TinyDino,
    build_tiny_sam,
    register_tiny_clip,
    tiny_swin,
    write_tiny_dino,
    write_tiny_sam,
)

H, W = 48, 64


# --------------------------------------------------------------------------- #
# Fixtures: tiny models saved as checkpoint files, loaded like the real ones
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TinyFiles:
    dino: TinyDino
    sam: Path

    def table(self) -> dict[str, WeightFile]:
        """A weight table that describes the tiny files exactly (as OFFICIAL_WEIGHTS does the real ones)."""
        entries = {}
        for path in (self.dino.checkpoint, self.sam):
            data = path.read_bytes()
            entries[path.name] = WeightFile(
                path.name, f"https://example.org/{path.name}", len(data), hashlib.sha256(data).hexdigest()
            )
        return entries

    def options(self, **overrides) -> GroundedSamOptions:
        values = dict(
            dino_config=str(self.dino.config),
            dino_checkpoint=str(self.dino.checkpoint),
            text_encoder=str(self.dino.text_encoder),
            dino_image_size=64,
            dino_max_size=96,
            sam_model_type=TINY_SAM_TYPE,
            sam_checkpoint=str(self.sam),
            device="cpu",
            box_threshold=0.0,  # random weights: let every query through
            text_threshold=0.0,
            min_area_fraction=0.0,
        )
        values.update(overrides)
        return GroundedSamOptions(**values)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Iterator[TinyFiles]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny_vlm")
    SAM_BUILDERS[TINY_SAM_TYPE] = build_tiny_sam
    with tiny_swin():
        dino = write_tiny_dino(folder / "dino")
    yield TinyFiles(dino=dino, sam=write_tiny_sam(folder / "sam"))
    SAM_BUILDERS.pop(TINY_SAM_TYPE, None)


@pytest.fixture(scope="module")
def labeler(files) -> GroundedSamLabeler:
    # verify_checksums stays on: the injected table holds the tiny files' real digests.
    with tiny_swin():
        return GroundedSamLabeler(files.options(), weight_table=files.table())


@contextlib.contextmanager
def options_set(labeler: GroundedSamLabeler, **changes) -> Iterator[GroundedSamLabeler]:
    """Temporarily change the options of the shared labeler (they are read per call)."""
    original = labeler.options
    labeler.options = replace(original, **changes)
    try:
        yield labeler
    finally:
        labeler.options = original


def _image(seed: int = 0, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A speckled bright image with a dark oval, like a lesion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    oval = ((yy - shape[0] / 2) / (shape[0] / 4)) ** 2 + ((xx - shape[1] / 2) / (shape[1] / 5)) ** 2 <= 1
    image = rng.normal(170, 25, size=shape)
    image[oval] = rng.normal(50, 15, size=oval.sum())
    return np.clip(image, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def count_calls(module: torch.nn.Module) -> Iterator[list[int]]:
    """Batch sizes of every forward call of ``module`` (a tensor or a NestedTensor input)."""
    calls: list[int] = []
    handle = module.register_forward_hook(
        lambda _m, args, _out: calls.append(int(getattr(args[0], "tensors", args[0]).shape[0]))
    )
    try:
        yield calls
    finally:
        handle.remove()


# --------------------------------------------------------------------------- #
# Options
# --------------------------------------------------------------------------- #


def test_default_options_are_the_method_decisions():
    opts = GroundedSamOptions()
    assert opts.prompts == ("dark oval", "dark round", "dark lobulated")
    assert (opts.box_threshold, opts.text_threshold, opts.nms_iou, opts.top_k) == (0.25, 0.20, 0.5, 1)
    assert opts.min_area_fraction == 0.01
    assert Path(opts.dino_checkpoint).name in OFFICIAL_WEIGHTS
    assert Path(opts.sam_checkpoint).name in OFFICIAL_WEIGHTS


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"prompts": ()}, "prompts"),
        ({"prompts": ("dark oval", " ")}, "prompts"),
        ({"box_threshold": 1.5}, "box_threshold"),
        ({"text_threshold": -0.1}, "text_threshold"),
        ({"nms_iou": 0.0}, "nms_iou"),
        ({"top_k": 0}, "top_k"),
        ({"batch_size": 0}, "batch_size"),
        ({"rerank": "blip"}, "rerank"),
        ({"rerank_weight": 2.0}, "rerank_weight"),
        ({"dino_max_size": 100}, "dino_max_size"),
    ],
)
def test_bad_options_name_the_parameter(changes, key):
    with pytest.raises(ConfigError) as info:
        GroundedSamOptions(**changes)
    assert info.value.key == key


def test_options_build_from_a_params_dict():
    from busseg.config import from_dict

    opts = from_dict(GroundedSamOptions, {"prompts": ["dark oval"], "top_k": 2}, "pseudo")
    assert opts.prompts == ("dark oval",) and opts.top_k == 2


# --------------------------------------------------------------------------- #
# Selection logic on mocked detector / SAM outputs
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("prompt", "caption"), [("dark oval", "dark oval ."), (" Dark Round ", "dark round ."), ("x .", "x .")]
)
def test_caption_for(prompt, caption):
    assert caption_for(prompt) == caption


def test_filter_queries_thresholds_and_pixel_boxes():
    # Tokens: [CLS] dark oval . [SEP]; phrase tokens are "dark" and "oval".
    phrase = torch.tensor([False, True, True, False, False])
    probabilities = torch.tensor(
        [
            [0.1, 0.5, 0.1, 0.2, 0.0],  # kept: max 0.5, phrase 0.5
            [0.9, 0.1, 0.15, 0.3, 0.0],  # box score 0.9 from [CLS], but no phrase token > 0.2: dropped
            [0.1, 0.2, 0.3, 0.1, 0.0],  # max 0.3 > 0.25 and phrase 0.3 > 0.2: kept
            [0.2, 0.2, 0.2, 0.2, 0.0],  # below box threshold: dropped
        ]
    )
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2], [0.95, 0.1, 0.3, 0.4], [0.5, 0.5, 1, 1]])
    kept, scores = filter_queries(probabilities, boxes, phrase, 0.25, 0.20, image_size=(100, 200))
    np.testing.assert_allclose(scores, [0.5, 0.3])
    # cxcywh normalised -> xyxy pixels (x by width 200, y by height 100), clipped to the image.
    np.testing.assert_allclose(kept, [[50, 25, 150, 75], [160, 0, 200, 30]], atol=1e-4)


def test_filter_queries_threshold_one_keeps_nothing():
    probabilities = torch.ones(3, 4)
    kept, scores = filter_queries(probabilities, torch.full((3, 4), 0.5), torch.ones(4, dtype=bool), 1.0, 0.2, (10, 10))
    assert kept.shape == (0, 4) and scores.shape == (0,)


def test_pool_and_suppress_across_prompts():
    per_prompt = [
        (np.array([[5, 5, 30, 30], [40, 10, 60, 40]]), np.array([0.6, 0.3])),
        (np.array([[6, 6, 31, 31]]), np.array([0.8])),  # overlaps the first box of prompt 0
        (np.zeros((0, 4)), np.zeros(0)),
    ]
    pooled = pool_and_suppress(per_prompt, nms_iou=0.5)
    np.testing.assert_allclose(pooled.scores, [0.8, 0.3])
    np.testing.assert_allclose(pooled.boxes, [[6, 6, 31, 31], [40, 10, 60, 40]])
    np.testing.assert_array_equal(pooled.prompt_index, [1, 0])
    # A stricter IoU keeps overlapping boxes apart only when they overlap less than it.
    assert len(pool_and_suppress(per_prompt, nms_iou=0.95)) == 3


def test_pool_and_suppress_without_boxes():
    assert len(pool_and_suppress([(np.zeros((0, 4)), np.zeros(0))] * 3, 0.5)) == 0


@pytest.mark.parametrize(("k", "expected"), [(1, [2]), (2, [2, 0]), (5, [2, 0, 3, 1])])
def test_top_k_order(k, expected):
    assert top_k_order(np.array([0.5, 0.1, 0.9, 0.5]), k).tolist() == expected


def test_rank_candidates_reranks_nms_survivors_before_top_k():
    per_prompt = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.4])),
        (np.array([[1, 1, 10, 10]]), np.array([0.7])),  # suppressed by the 0.9 box
    ]
    seen = []

    def clip_scores(boxes):
        seen.append(boxes.copy())
        return np.array([0.1, 0.95])  # CLIP prefers the second survivor

    boxes, scores = rank_candidates(per_prompt, 0.5, 1)
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10]])
    boxes, scores = rank_candidates(per_prompt, 0.5, 1, clip_scores, rerank_weight=0.5)
    assert len(seen[0]) == 2  # all survivors were scored, not only the top one
    np.testing.assert_allclose(boxes, [[50, 50, 60, 60]])
    np.testing.assert_allclose(scores, [0.5 * 0.4 + 0.5 * 0.95])
    boxes, _ = rank_candidates(per_prompt, 0.5, 1, clip_scores, rerank_weight=0.0)
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10]])


def test_select_best_masks_by_predicted_iou():
    masks = np.zeros((2, 3, 4, 4), dtype=bool)
    for box in range(2):
        for candidate in range(3):
            masks[box, candidate, candidate, box] = True  # a distinct pixel per (box, candidate)
    ious = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.8]])
    best, best_iou = select_best_masks(masks, ious)
    np.testing.assert_array_equal(best, masks[[0, 1], [1, 2]])
    np.testing.assert_allclose(best_iou, [0.9, 0.8])


def test_assemble_label_unions_masks_scores_best_box_and_filters_area():
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[0, :2, :2] = True
    masks[1, 5:, 5:] = True
    boxes = np.array([[0.4, 0.6, 2.2, 1.9], [5, 5, 10, 10]])
    label = assemble_label((10, 10), boxes, np.array([0.8, 0.6]), masks, min_area_fraction=0.01)
    assert label.valid and label.reason == ""
    assert label.mask.sum() == 4 + 25 and label.score == 0.8 and label.box == (0, 1, 2, 2)
    small = assemble_label((10, 10), boxes[:1], np.array([0.8]), masks[:1], min_area_fraction=0.04)
    assert not small.valid and small.reason == "area_below_min" and small.score == 0.8
    none = assemble_label((10, 10), np.zeros((0, 4)), np.zeros(0), np.zeros((0, 10, 10)), 0.01)
    assert not none.valid and none.reason == "no_box" and none.mask.shape == (10, 10)


def test_labeler_prompts_sam_with_the_best_box_after_nms(labeler, monkeypatch):
    fixed = [
        (np.array([[5, 5, 30, 30], [40, 10, 60, 40]]), np.array([0.6, 0.3])),
        (np.array([[6, 6, 31, 31]]), np.array([0.8])),
        (np.zeros((0, 4)), np.zeros(0)),
    ]
    monkeypatch.setattr(labeler.detector, "detect", lambda images, *a: [fixed for _ in images])
    prompted = []
    chosen = np.zeros((1, 3, H, W), dtype=bool)
    chosen[0, 1, 10:30, 10:30] = True  # the candidate with the highest predicted IoU
    chosen[0, 0, :, :] = True

    def fake_segment(embedding, boxes):
        prompted.append(np.asarray(boxes))
        return chosen[:, :, :, :].repeat(len(boxes), axis=0), np.tile([0.3, 0.9, 0.5], (len(boxes), 1))

    monkeypatch.setattr(labeler.segmenter, "segment", fake_segment)
    label = labeler.label(_image())
    np.testing.assert_allclose(prompted[0], [[6, 6, 31, 31]])
    assert label.valid and label.score == pytest.approx(0.8) and label.box == (6, 6, 31, 31)
    np.testing.assert_array_equal(label.mask, chosen[0, 1])
    with options_set(labeler, top_k=2):
        labeler.label(_image())
    np.testing.assert_allclose(prompted[1], [[6, 6, 31, 31], [40, 10, 60, 40]])
    with options_set(labeler, min_area_fraction=0.2):  # 400 / 3072 pixels = 0.13
        small = labeler.label(_image())
    assert not small.valid and small.reason == "area_below_min"


# --------------------------------------------------------------------------- #
# The real models (tiny, random weights) through the real loading path
# --------------------------------------------------------------------------- #


def test_label_runs_end_to_end(labeler):
    label = labeler.label(_image())
    assert label.mask.shape == (H, W) and label.mask.dtype == bool
    assert label.valid, label.reason
    assert 0.0 <= label.score <= 1.0
    x0, y0, x1, y1 = label.box
    assert 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H


def test_checkpoints_were_loaded_not_random(labeler, files):
    dino_state = torch.load(files.dino.checkpoint, weights_only=True)["model"]
    sam_state = torch.load(files.sam, weights_only=True)
    model_state = labeler.detector.model.state_dict()
    for key in (
        "transformer.decoder.norm.weight",
        "backbone.0.patch_embed.proj.weight",
        "bert.embeddings.word_embeddings.weight",
    ):
        torch.testing.assert_close(model_state[key], dino_state[key])
    key = "mask_decoder.iou_token.weight"
    torch.testing.assert_close(labeler.segmenter.sam.state_dict()[key], sam_state[key])


def test_no_box_gives_invalid_label_without_running_sam(labeler):
    with options_set(labeler, box_threshold=1.0), count_calls(labeler.segmenter.sam.image_encoder) as calls:
        label = labeler.label(_image())
    assert not label.valid and label.reason == "no_box" and not label.mask.any()
    assert calls == []


def test_each_image_is_encoded_once_whatever_the_prompts_and_boxes(labeler, monkeypatch):
    boxes_per_call = []
    segment = labeler.segmenter.segment
    monkeypatch.setattr(
        labeler.segmenter, "segment", lambda emb, boxes: boxes_per_call.append(len(boxes)) or segment(emb, boxes)
    )
    with (
        options_set(labeler, top_k=3),
        count_calls(labeler.segmenter.sam.image_encoder) as sam_calls,
        count_calls(labeler.detector.model.backbone) as dino_calls,
    ):
        labeler.label(_image())
    assert len(labeler.options.prompts) == 3
    assert boxes_per_call == [3]
    assert sam_calls == [1]  # one SAM image embedding for 3 prompts and 3 boxes
    assert dino_calls == [1]  # and one detector backbone pass


def test_label_batch_batches_and_matches_single_labels(labeler):
    images = [_image(0), _image(1), _image(2, shape=(40, 52)), _image(3)]
    with (
        options_set(labeler, batch_size=4),
        count_calls(labeler.segmenter.sam.image_encoder) as sam_calls,
        count_calls(labeler.detector.model.backbone) as dino_calls,
    ):
        batched = labeler.label_batch(images)
    assert sam_calls == [4]  # every image embedded once, in one call
    assert sorted(dino_calls) == [1, 3]  # one detector batch per image shape
    for image, label in zip(images, batched):
        single = labeler.label(image)
        assert label.mask.shape == image.shape
        assert label.box == single.box and label.score == pytest.approx(single.score, abs=1e-5)
        assert (label.mask == single.mask).mean() > 0.99
    with options_set(labeler, batch_size=3), count_calls(labeler.segmenter.sam.image_encoder) as chunked:
        assert len(labeler.label_batch(images)) == 4
    assert chunked == [3, 1]


def test_split_forward_equals_grounding_dino_forward(labeler):
    detector = labeler.detector
    batch = torch.stack([detector.preprocess(_image(0)), detector.preprocess(_image(1))])
    prompts = labeler.options.prompts
    outputs = detector.forward(batch, prompts)
    for prompt, (logits, boxes) in zip(prompts, outputs):
        for b in range(len(batch)):
            with torch.no_grad(), gs._quiet_library():
                reference = detector.model(batch[b : b + 1], captions=[caption_for(prompt)])
            finite = torch.isfinite(reference["pred_logits"][0])
            assert torch.equal(finite, torch.isfinite(logits[b]))
            torch.testing.assert_close(logits[b][finite], reference["pred_logits"][0][finite], atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(boxes[b], reference["pred_boxes"][0], atol=1e-5, rtol=1e-5)


def test_clip_rerank_option_builds_and_uses_the_reranker(files, tmp_path, monkeypatch):
    model = register_tiny_clip(tmp_path)
    with tiny_swin():
        labeler = GroundedSamLabeler(
            files.options(rerank="clip", clip_model=model, clip_pretrained="", rerank_weight=1.0),
            weight_table=files.table(),
        )
    assert labeler.reranker is not None
    image = _image()
    scored = []
    score = labeler.reranker.score
    monkeypatch.setattr(labeler.reranker, "score", lambda img, boxes: scored.append(boxes) or score(img, boxes))
    label = labeler.label(image)
    assert label.valid and len(scored) == 1
    clip = score(image, scored[0])
    assert label.score == pytest.approx(clip.max())  # weight 1: the score is CLIP's


@pytest.mark.parametrize("bad", [np.zeros((H, W), dtype=np.float32), np.zeros((H, W, 3), dtype=np.uint8)])
def test_rejects_non_greyscale_uint8(labeler, bad):
    with pytest.raises(ValueError, match="uint8 greyscale"):
        labeler.label(bad)


# --------------------------------------------------------------------------- #
# Weight files and loading errors
# --------------------------------------------------------------------------- #


@pytest.fixture()
def no_model_building(monkeypatch):
    """Fail loudly if a model is built: verification must come first."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was built before the weight files were verified")

    monkeypatch.setattr(gs.GroundingDinoDetector, "__init__", refuse)
    monkeypatch.setattr(gs.SamSegmenter, "__init__", refuse)


def test_missing_sam_checkpoint_fails_before_any_model_is_built(files, tmp_path, no_model_building):
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(DataError) as info:
        GroundedSamLabeler(files.options(sam_checkpoint=str(missing), sam_model_type="vit_b"))
    message = str(info.value)
    assert str(missing) in message and OFFICIAL_WEIGHTS["sam_vit_b_01ec64.pth"].url in message


def test_official_name_with_wrong_contents_is_refused(files, tmp_path, no_model_building):
    fake = tmp_path / "groundingdino_swint_ogc.pth"
    fake.write_bytes(files.dino.checkpoint.read_bytes())  # a valid checkpoint, but not the official one
    with pytest.raises(DataError, match="wrong size") as info:
        GroundedSamLabeler(files.options(dino_checkpoint=str(fake)))
    assert "github.com/IDEA-Research/GroundingDINO/releases" in str(info.value)


def test_wrong_hash_in_the_table_is_refused(files, no_model_building):
    table = files.table()
    entry = table[files.sam.name]
    table[files.sam.name] = WeightFile(entry.name, entry.url, entry.size, "f" * 64)
    with pytest.raises(DataError, match="wrong sha256"):
        GroundedSamLabeler(files.options(), weight_table=table)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"dino_config": "GroundingDINO_NoSuch.py"}, "dino_config"),
        ({"text_encoder": "roberta-large"}, "text_encoder"),
        ({"sam_model_type": "vit_z"}, "sam_model_type"),
    ],
)
def test_bad_model_parameters_fail_before_building(files, no_model_building, changes, key):
    with pytest.raises(ConfigError) as info:
        GroundedSamLabeler(files.options(verify_checksums=False, **changes))
    assert info.value.key == key


def test_resolve_dino_config_accepts_shipped_names_and_paths(files):
    assert resolve_dino_config("GroundingDINO_SwinT_OGC.py").is_file()
    assert resolve_dino_config(str(files.dino.config)) == files.dino.config
    with pytest.raises(ConfigError, match="GroundingDINO_SwinB_cfg.py"):  # lists what is shipped
        resolve_dino_config("missing/GroundingDINO_SwinT_OGC.py")


def test_load_state_reports_missing_and_mismatched_parameters(tmp_path, caplog):
    state = build_tiny_sam().state_dict()
    sam = build_tiny_sam()
    load_state(sam, state, "ok.pth", "SAM tiny")  # complete: no error
    incomplete = {k: v for k, v in state.items() if not k.startswith("mask_decoder.")}
    with pytest.raises(DataError, match="parameters missing"):
        load_state(sam, incomplete, "part.pth", "SAM tiny")
    wrong = dict(state)
    wrong["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    with pytest.raises(DataError, match="does not fit SAM tiny"):
        load_state(sam, wrong, "wrong.pth", "SAM tiny")
    extra = {**state, "label_enc.weight": torch.zeros(2), "unused.weight": torch.zeros(2)}
    load_state(sam, extra, "extra.pth", "SAM tiny", ignorable=frozenset({"label_enc.weight"}))
    assert "unused.weight" in caplog.text and "label_enc" not in caplog.text


def test_load_checkpoint_unpickles_objects_only_from_verified_files(tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(DataError, match="not unpickled.*argparse.Namespace"):
        load_checkpoint(path, trusted=False)
    assert load_checkpoint(path, trusted=True)["args"].lr == 1.0


@pytest.mark.parametrize("trusted", [False, True])
def test_load_checkpoint_rejects_corrupt_files(tmp_path, trusted):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.ones(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    for path in (garbage, truncated):
        with pytest.raises(DataError, match="not a readable PyTorch checkpoint"):
            load_checkpoint(path, trusted=trusted)


def test_state_dict_of_accepts_official_and_plain_layouts():
    state = {"module.w": torch.ones(1)}
    assert list(gs._state_dict_of({"model": state}, "a.pth")) == ["w"]
    assert list(gs._state_dict_of(state, "a.pth")) == ["w"]
    with pytest.raises(DataError, match="not a state dict"):
        gs._state_dict_of([1, 2], "a.pth")


def test_label_dataset_feeds_the_labeler_batches_of_batch_size(labeler, tiny_prepared, tmp_path):
    """pseudo_label's loop hands label_batch batch_size images at a time (it called label per
    image, so the backend's batching was never used); the labels are those of single images."""
    from busseg.data.index import read_index
    from busseg.data.prepared import PreparedDataset
    from busseg.pseudo.run import label_dataset

    index = read_index(tiny_prepared / "index.csv").iloc[:6]
    with options_set(labeler, batch_size=4), count_calls(labeler.detector.model.backbone) as dino_calls:
        table, _ = label_dataset(lambda: labeler, tiny_prepared, index, tmp_path / "out", progress=False)
    assert dino_calls == [4, 2]  # two detector batches for six images of one size
    prepared = PreparedDataset(tiny_prepared)
    for sample_id, box in zip(table["id"], table["box"]):
        single = labeler.label(prepared.image(sample_id))
        assert box == ("" if single.box is None else " ".join(str(v) for v in single.box))
