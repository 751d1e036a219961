from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from busseg.ssl.aurcl import AURCLLoss, aurcl_loss, select_uncertain, uncertainty

torch.set_num_threads(1)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blob_probs(size: int = 16, sharpness: float = 1.5) -> torch.Tensor:
    """A disc of foreground with a soft (uncertain) rim, shape (1, 1, size, size)."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    radius = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    return torch.sigmoid((size / 4 - radius) * sharpness)[None, None]


def reference_aurcl(features, probs, ratio, tau_fix, grid, temperature, eps=1e-6) -> float:
    """Loop implementation in float64; probs at the feature resolution, h and w multiples of grid."""
    f = features.double().numpy()
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    p = probs.double().numpy()[:, 0]
    batch, _, h, w = f.shape
    ch, cw = h // grid, w // grid
    image_losses = []
    for b in range(batch):
        u = 1 - np.abs(2 * p[b] - 1)
        k = max(1, round(ratio * h * w))
        tau = max(np.sort(u.ravel())[::-1][k - 1], tau_fix)
        selected = u >= tau
        p_rev = np.where(selected, 1 - p[b], p[b])
        views, anchors = [], []
        for weights in (p[b], p_rev):
            cells = []
            for i in range(grid):
                for j in range(grid):
                    cell = (slice(i * ch, (i + 1) * ch), slice(j * cw, (j + 1) * cw))
                    wc = weights[cell]
                    v = (f[b][:, cell[0], cell[1]] * wc).sum(axis=(1, 2)) / wc.size / (wc.mean() + eps)
                    cells.append(v / max(np.linalg.norm(v), 1e-12))
            views.append(np.stack(cells))
        for i in range(grid):
            for j in range(grid):
                anchors.append(selected[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw].any())
        original, reversed_ = views
        losses = []
        for a in np.flatnonzero(anchors):
            logits = reversed_ @ original[a] / temperature
            losses.append(-(logits[a] - np.log(np.exp(logits).sum())))
        if losses:
            image_losses.append(np.mean(losses))
    return float(np.mean(image_losses)) if image_losses else 0.0


# --- select_uncertain ----------------------------------------------------------------------------


def test_uncertainty_values():
    torch.testing.assert_close(uncertainty(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])), torch.tensor([0, 0.5, 1, 0.5, 0]))


def spread_probs(h: int = 20, w: int = 20, seed: int = 0) -> torch.Tensor:
    """p uniformly spread over [0, 0.5] without ties, so u = 2p is spread over [0, 1]."""
    values = torch.linspace(0, 0.5, h * w)[torch.randperm(h * w, generator=generator(seed))]
    return values.view(1, 1, h, w)


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3])
def test_selects_the_top_ratio_of_pixels_when_uncertainty_is_spread(ratio):
    probs = spread_probs()
    selected = select_uncertain(probs, ratio=ratio, tau_fix=0.2)
    assert selected.shape == probs.shape and selected.dtype == torch.bool
    assert selected.sum().item() == round(ratio * 400)
    u = uncertainty(probs)
    assert u[selected].min() > u[~selected].max()


@pytest.mark.parametrize("tau_fix", [0.2, 0.5])
def test_tau_fix_bounds_the_selection(tau_fix):
    probs = spread_probs()
    selected = select_uncertain(probs, ratio=0.9, tau_fix=tau_fix)  # K-th largest u is about 0.1
    u = uncertainty(probs)
    assert (u[selected] >= tau_fix).all()
    assert selected.eq(u >= tau_fix).all()


def test_threshold_is_per_image():
    probs = torch.cat([spread_probs(seed=1), spread_probs(seed=2) * 0.3])  # second: u in [0, 0.3]
    selected = select_uncertain(probs, ratio=0.1, tau_fix=0.2)
    assert selected[0].sum().item() == 40
    assert selected[1].sum().item() == 40  # its own top 10 %, all above tau_fix
    assert uncertainty(probs[1])[selected[1]].min() >= 0.2


def test_confident_pixels_are_never_selected_and_ties_are_all_selected():
    assert not select_uncertain(torch.randint(0, 2, (2, 1, 8, 8), generator=generator(0)).float()).any()
    assert select_uncertain(torch.full((1, 1, 8, 8), 0.5), ratio=0.1).all()


def test_at_least_one_pixel_is_considered():
    probs = torch.zeros(1, 1, 4, 4)
    probs[0, 0, 2, 3] = 0.5
    selected = select_uncertain(probs, ratio=1e-6)
    assert selected.sum().item() == 1 and selected[0, 0, 2, 3]


# --- aurcl_loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "tau_fix", "grid", "temperature", "seed"),
    [(0.1, 0.2, 4, 0.1, 0), (0.3, 0.2, 2, 0.5, 1), (0.05, 0.0, 8, 0.1, 2), (1.0, 0.6, 4, 0.2, 3)],
)
def test_matches_loop_reference(ratio, tau_fix, grid, temperature, seed):
    features = torch.randn(2, 5, 16, 16, generator=generator(seed))
    probs = torch.rand(2, 1, 16, 16, generator=generator(seed + 100))
    expected = reference_aurcl(features, probs, ratio, tau_fix, grid, temperature)
    result = aurcl_loss(features, probs, ratio=ratio, tau_fix=tau_fix, grid=grid, temperature=temperature)
    assert result.dtype == torch.float32
    assert result.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("probs", [torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()])
def test_no_selected_pixels_gives_exactly_zero_with_a_graph(probs):
    features = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = aurcl_loss(features, probs, grid=4)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_images_without_anchors_are_left_out_of_the_mean():
    features = torch.randn(2, 4, 16, 16, generator=generator(5))
    probs = torch.cat([blob_probs(), torch.zeros(1, 1, 16, 16)])
    both = aurcl_loss(features, probs, grid=4)
    first = aurcl_loss(features[:1], probs[:1], grid=4)
    assert both.item() == pytest.approx(first.item())
    assert first.item() > 0


def test_probabilities_are_resized_to_the_feature_map():
    features = torch.randn(1, 4, 8, 8, generator=generator(6))
    probs = blob_probs(32, sharpness=0.5)
    resized = F.interpolate(probs, size=(8, 8), mode="bilinear", align_corners=False)
    assert aurcl_loss(features, probs, grid=4).item() == pytest.approx(aurcl_loss(features, resized, grid=4).item())


def test_gradient_reaches_features_and_projection_head_but_not_probs():
    criterion = AURCLLoss(in_channels=6, proj_dim=8, grid=4)
    features = torch.randn(2, 6, 16, 16, generator=generator(7), requires_grad=True)
    probs = torch.cat([blob_probs(), blob_probs(sharpness=0.7)]).requires_grad_()
    loss = criterion(features, probs)
    loss.backward()
    assert loss.item() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0 and torch.isfinite(features.grad).all()
    assert criterion.projection.weight.grad.abs().sum() > 0
    assert probs.grad is None


def test_loss_decreases_when_optimising_features():
    # Nearly identical features everywhere: every patch looks alike, so InfoNCE starts
    # near log(16) and must learn to tell the patches apart.
    features = (torch.ones(1, 8, 16, 16) + 0.1 * torch.randn(1, 8, 16, 16, generator=generator(0))).requires_grad_()
    probs = blob_probs()
    optimizer = torch.optim.Adam([features], lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = aurcl_loss(features, probs, grid=4)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0
    assert losses[-1] < 0.1 * losses[0]


def test_half_precision_features_give_a_float32_loss():
    features = torch.randn(1, 4, 16, 16, generator=generator(8))
    loss = aurcl_loss(features.half(), blob_probs(), grid=4)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(aurcl_loss(features.half().float(), blob_probs(), grid=4).item(), rel=1e-4)


# --- module and input checks ---------------------------------------------------------------------


def test_module_defaults_follow_method_decisions():
    criterion = AURCLLoss(in_channels=16)
    assert (criterion.projection.out_channels, criterion.ratio, criterion.tau_fix) == (64, 0.1, 0.2)
    assert (criterion.grid, criterion.temperature) == (8, 0.1)
    assert criterion.projection.kernel_size == (1, 1)


@pytest.mark.parametrize(
    ("channels", "proj_dim", "size", "grid", "seed"),
    [(3, 5, (16, 16), 4, 0), (3, 5, (13, 19), 8, 1), (4, 4, (8, 8), 8, 2), (6, 2, (16, 16), 4, 3)],
)
def test_module_equals_functional_loss_on_its_projection(channels, proj_dim, size, grid, seed):
    # proj_dim >= channels takes the shortcut route, proj_dim < channels the direct one.
    torch.manual_seed(seed)
    criterion = AURCLLoss(in_channels=channels, proj_dim=proj_dim, grid=grid, temperature=0.2)
    features = torch.randn(2, channels, *size, generator=generator(seed), requires_grad=True)
    probs = torch.rand(2, 1, 32, 32, generator=generator(seed + 10))

    fused = criterion(features, probs)
    fused_grads = torch.autograd.grad(fused, [features, criterion.projection.weight, criterion.projection.bias])
    direct = aurcl_loss(criterion.projection(features), probs, grid=grid, temperature=0.2)
    direct_grads = torch.autograd.grad(direct, [features, criterion.projection.weight, criterion.projection.bias])

    assert fused.item() > 0
    assert fused.item() == pytest.approx(direct.item(), rel=1e-5)
    for fused_grad, direct_grad in zip(fused_grads, direct_grads):
        torch.testing.assert_close(fused_grad, direct_grad, rtol=1e-4, atol=1e-6)


def test_module_without_selected_pixels_gives_zero_connected_to_the_head():
    criterion = AURCLLoss(in_channels=3, proj_dim=5, grid=4)
    features = torch.randn(1, 3, 8, 8, requires_grad=True)
    loss = criterion(features, torch.ones(1, 1, 8, 8))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(criterion.projection.weight.grad, torch.zeros_like(criterion.projection.weight))
    assert torch.equal(features.grad, torch.zeros_like(features))


@pytest.mark.parametrize("proj_dim", [8, 2])
def test_computation_stays_float32_under_autocast(proj_dim):
    criterion = AURCLLoss(in_channels=4, proj_dim=proj_dim, grid=4)
    features = torch.randn(2, 4, 16, 16, generator=generator(11))
    probs = torch.cat([blob_probs(), blob_probs(sharpness=0.7)])
    expected_module = criterion(features, probs).item()
    expected_functional = aurcl_loss(features, probs, grid=4).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module_loss = criterion(features, probs)
        functional_loss = aurcl_loss(features, probs, grid=4)
    assert module_loss.dtype == functional_loss.dtype == torch.float32
    assert module_loss.item() == pytest.approx(expected_module, rel=1e-6)
    assert functional_loss.item() == pytest.approx(expected_functional, rel=1e-6)


def test_module_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\)"):
        AURCLLoss(in_channels=16)(torch.zeros(1, 8, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"ratio": 0.0}, "ratio"), ({"ratio": 1.5}, "ratio"), ({"tau_fix": -0.1}, "tau_fix"),
     ({"grid": 0}, "grid"), ({"temperature": 0.0}, "temperature"), ({"proj_dim": 0}, "proj_dim")],
)
def test_module_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AURCLLoss(in_channels=4, **kwargs)


@pytest.mark.parametrize(
    ("features", "probs", "match"),
    [
        (torch.zeros(2, 4, 8), torch.zeros(2, 1, 8, 8), "features"),
        (torch.zeros(2, 4, 8, 8), torch.zeros(2, 2, 8, 8), "probs"),
        (torch.zeros(2, 4, 8, 8), torch.zeros(3, 1, 8, 8), "batch"),
        (torch.zeros(2, 4, 8, 8), torch.full((2, 1, 8, 8), 1.5), r"\[0, 1\]"),
    ],
)
def test_functional_rejects_bad_inputs(features, probs, match):
    with pytest.raises(ValueError, match=match):
        aurcl_loss(features, probs)


# --- the prototype variant (train.aurcl_variant: prototype) -------------------------------

def _lesion_scene(size: int = 32, batch: int = 2):
    """A disc lesion: teacher target, and student probabilities uncertain on a ring at its boundary."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    target = (radius < size / 4).float().expand(batch, 1, size, size).clone()
    # Confident inside and outside, 0.5 near the boundary (the student's uncertain band).
    probs = torch.sigmoid((size / 4 - radius) * 0.8).expand(batch, 1, size, size).clone()
    return yy, xx, target, probs


def test_prototype_loss_rewards_class_features_and_not_positional_ones():
    from busseg.ssl import prototype_contrast_loss

    torch.manual_seed(0)
    yy, xx, target, probs = _lesion_scene()
    b, dim = target.shape[0], 16
    # Ideal features: one direction for foreground, another for background (plus a little noise).
    fg, bg = torch.randn(dim), torch.randn(dim)
    ideal = torch.where(target.bool(), fg[None, :, None, None], bg[None, :, None, None]) + 0.05 * torch.randn(b, dim, 32, 32)
    # Positional features: sinusoids of the pixel position (what the paper's variant rewards).
    freqs = torch.arange(1, dim // 4 + 1).float()
    positional = torch.cat([f(yy[None] * w / 5) for w in freqs for f in (torch.sin, torch.cos)]
                           + [f(xx[None] * w / 5) for w in freqs for f in (torch.sin, torch.cos)])
    positional = positional[None].expand(b, dim, 32, 32)
    random = torch.randn(b, dim, 32, 32)
    losses = {name: float(prototype_contrast_loss(f, probs, target)) for name, f in
              (("ideal", ideal), ("positional", positional), ("random", random))}
    assert losses["ideal"] < 0.05
    assert losses["positional"] > 0.3 and losses["random"] > 0.3
    assert losses["ideal"] < losses["positional"] and losses["ideal"] < losses["random"]
    # The paper's variant ranks them the other way round (docs/method.md's measured flaw).
    paper = {name: float(aurcl_loss(f, probs, grid=8)) for name, f in (("ideal", ideal), ("positional", positional))}
    assert paper["positional"] < paper["ideal"]


def test_prototype_loss_is_zero_without_a_prototype_or_anchor_and_keeps_a_graph():
    from busseg.ssl import prototype_contrast_loss

    _, _, target, probs = _lesion_scene()
    features = torch.randn(2, 8, 32, 32, requires_grad=True)
    loss = prototype_contrast_loss(features, probs, torch.zeros_like(target))  # no foreground prototype
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert features.grad is not None and float(features.grad.abs().sum()) == 0.0


def test_prototype_module_trains_features_towards_the_classes():
    from busseg.ssl import PrototypeAURCLLoss

    torch.manual_seed(0)
    _, _, target, probs = _lesion_scene()
    criterion = PrototypeAURCLLoss(in_channels=4, proj_dim=8)
    # Confident pixels carry some class signal (as the supervised loss gives them); the uncertain
    # boundary pixels start with none beyond it and must be pulled to their class.
    signal = torch.where(target.bool(), 1.0, -1.0) * torch.tensor([1.0, -1.0, 0.5, 0.0]).view(1, 4, 1, 1)
    features = (torch.randn(2, 4, 32, 32) + 0.5 * signal).requires_grad_(True)
    optimizer = torch.optim.Adam([features, *criterion.parameters()], lr=0.05)
    first = None
    for _ in range(80):
        loss = criterion(features, probs, target)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first


def test_prototype_loss_ignores_padded_pixels() -> None:
    """Pixels outside ``valid`` (an augmentation's zero padding) are neither prototypes nor anchors."""
    from busseg.ssl.aurcl import prototype_contrast_loss

    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 16, 16, generator=g)
    probs = torch.rand(2, 1, 16, 16, generator=g)
    target = (torch.rand(2, 1, 16, 16, generator=g) > 0.6).float()
    valid = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    valid[..., :, 12:] = False  # a padded band on the right
    base = prototype_contrast_loss(features, probs, target, ratio=0.3, tau_fix=0.2, valid=valid)
    # Whatever the padding holds (features, student probabilities, "confident background"
    # targets), the loss is the same ...
    changed_f, changed_p, changed_t = features.clone(), probs.clone(), target.clone()
    changed_f[..., 12:] = torch.randn(2, 8, 16, 4, generator=g) * 5
    changed_p[..., 12:] = 0.5
    changed_t[..., 12:] = 0.0
    torch.testing.assert_close(prototype_contrast_loss(changed_f, changed_p, changed_t, 0.3, 0.2, valid=valid), base)
    # ... and without the mask the padding would have counted.
    assert not torch.allclose(prototype_contrast_loss(changed_f, changed_p, changed_t, 0.3, 0.2), base)


def test_prototype_loss_valid_mask_at_a_coarser_feature_map() -> None:
    from busseg.ssl.aurcl import _valid_at

    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    valid[..., 0, :] = False
    pooled = _valid_at(valid, torch.Size([4, 4]))
    assert pooled.shape == (1, 4, 4) and not pooled[0, 0].any() and pooled[0, 1:].all()
