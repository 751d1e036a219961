from __future__ import annotations

import numpy as np
import pytest
import torch

from busseg.errors import ConfigError
from busseg.pseudo.clip_rerank import ClipReranker, combine_scores, crop_boxes

from .tiny_vlm import register_tiny_clip

PROMPTS = ("dark oval", "dark round")
NEGATIVES = ("bright", "shadow", "text")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return register_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def reranker(tiny_clip) -> ClipReranker:
    torch.manual_seed(0)
    return ClipReranker(tiny_clip, None, PROMPTS, NEGATIVES)


@pytest.fixture()
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(40, 60), dtype=np.uint8)


@pytest.mark.parametrize(
    ("weight", "expected"),
    [(0.0, [0.9, 0.2]), (1.0, [0.1, 0.8]), (0.5, [0.5, 0.5]), (0.25, [0.7, 0.35])],
)
def test_combine_scores(weight, expected):
    np.testing.assert_allclose(combine_scores(np.array([0.9, 0.2]), np.array([0.1, 0.8]), weight), expected)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_combine_scores_rejects_weights_outside_unit_interval(weight):
    with pytest.raises(ConfigError, match="rerank_weight"):
        combine_scores(np.ones(1), np.ones(1), weight)


def test_crop_boxes_rounds_outwards_and_clips(image):
    crops = crop_boxes(image, np.array([[10.2, 5.7, 20.1, 15.0], [-5, -5, 100, 100], [30, 30, 30, 30]]))
    assert [c.size for c in crops] == [(11, 10), (60, 40), (1, 1)]  # PIL sizes are (width, height)
    assert all(c.mode == "RGB" for c in crops)
    first = np.asarray(crops[0])
    np.testing.assert_array_equal(first[..., 0], image[5:15, 10:21])
    np.testing.assert_array_equal(first[..., 0], first[..., 2])  # grey replicated to three channels


def test_scores_are_positive_probability_mass(reranker, image):
    boxes = np.array([[0, 0, 30, 20], [10, 10, 50, 38], [5, 5, 6, 6]], dtype=float)
    scores = reranker.score(image, boxes)
    assert scores.shape == (3,)
    assert np.all((scores > 0) & (scores < 1))
    # Independent computation for the first crop with the open_clip model itself.
    model = reranker.model
    with torch.no_grad():
        pixels = reranker.preprocess(crop_boxes(image, boxes[:1])[0])[None]
        v = model.encode_image(pixels, normalize=True)
        probs = (model.logit_scale.exp() * v @ reranker.text_features.T).softmax(-1)[0]
    assert scores[0] == pytest.approx(float(probs[: len(PROMPTS)].sum()), abs=1e-5)
    np.testing.assert_allclose(reranker.score(image, boxes), scores)  # deterministic


def test_text_features_are_the_prompts_in_order(reranker, tiny_clip):
    import open_clip

    tokenizer = open_clip.get_tokenizer(tiny_clip)
    with torch.no_grad():
        expected = reranker.model.encode_text(tokenizer([*PROMPTS, *NEGATIVES]), normalize=True)
    torch.testing.assert_close(reranker.text_features, expected)


def test_without_negative_prompts_every_crop_scores_one(tiny_clip, image):
    only_positive = ClipReranker(tiny_clip, "", PROMPTS, ())
    np.testing.assert_allclose(only_positive.score(image, np.array([[0, 0, 10, 10], [5, 5, 40, 30]])), 1.0, rtol=1e-6)


def test_no_boxes_no_scores(reranker, image):
    assert reranker.score(image, np.zeros((0, 4))).shape == (0,)


def test_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="clip_model"):
        ClipReranker("ViT-NOPE-99", None, PROMPTS, NEGATIVES)


def test_unknown_pretrained_tag_is_a_config_error():
    with pytest.raises(ConfigError, match="clip_pretrained") as info:
        ClipReranker("ViT-B-32", "no_such_tag", PROMPTS, NEGATIVES)
    assert "laion2b_s34b_b79k" in str(info.value)  # lists the real tags


def test_needs_a_positive_prompt(tiny_clip):
    with pytest.raises(ConfigError, match="prompts"):
        ClipReranker(tiny_clip, None, (), NEGATIVES)
