"""Tests for vericar.models.losses against naive per-anchor references (tiny, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from vericar.models.losses import HiMSMin, MultiSimilarity, build_level_index, level_label_tensors

ALPHA, BETA, BASE, EPS = 2.0, 50.0, 0.5, 0.1


def naive_ms(emb, labels, alpha=ALPHA, beta=BETA, base=BASE, eps=EPS):
    """Wang et al. 2019 MS loss, one anchor at a time, with pml's miner/averaging rules.

    Read from pml 2.9 source: cosine similarity on normalised embeddings; the miner
    keeps negatives with S + eps > min S_pos and positives with S - eps < max S_neg
    (per anchor); the batch returns 0 if it has no positive or no negative pair, or
    if at most one positive and one negative pair survive mining; otherwise the
    mean is over ALL anchors (anchors with nothing mined count as 0).
    """
    x = torch.nn.functional.normalize(emb, dim=1)
    s = x @ x.T
    n = len(labels)
    lab = labels.tolist()
    pos = [[j for j in range(n) if j != i and lab[j] == lab[i]] for i in range(n)]
    neg = [[j for j in range(n) if lab[j] != lab[i]] for i in range(n)]
    if eps is not None:
        if not any(pos) or not any(neg):
            return emb.sum() * 0
        mined_pos, mined_neg = [], []
        for i in range(n):
            min_p = min((s[i, j].item() for j in pos[i]), default=math.inf)
            max_n = max((s[i, j].item() for j in neg[i]), default=-math.inf)
            mined_pos.append([j for j in pos[i] if s[i, j].item() - eps < max_n])
            mined_neg.append([j for j in neg[i] if s[i, j].item() + eps > min_p])
        pos, neg = mined_pos, mined_neg
    if sum(map(len, pos)) <= 1 and sum(map(len, neg)) <= 1:
        return emb.sum() * 0
    per_anchor = []
    for i in range(n):
        li = emb.sum() * 0
        if pos[i]:
            li = li + torch.log(1 + sum(torch.exp(-alpha * (s[i, j] - base)) for j in pos[i])) / alpha
        if neg[i]:
            li = li + torch.log(1 + sum(torch.exp(beta * (s[i, j] - base)) for j in neg[i])) / beta
        per_anchor.append(li)
    return torch.stack(per_anchor).mean()


def has_pairs(labels):
    return len(set(labels.tolist())) >= 2 and len(set(labels.tolist())) < len(labels)


def naive_hims(emb, level_labels, levels, weights=None, bound="cumulative", eps=EPS):
    """Python if/else version of the HiMS-Min rule (chosen branch picked by value)."""
    weights = weights or [1.0 / len(levels)] * len(levels)
    total, prev = emb.sum() * 0, None
    for w, lvl in zip(weights, levels):
        if not has_pairs(level_labels[lvl]):
            continue
        loss = naive_ms(emb, level_labels[lvl], eps=eps)
        eff = loss if prev is None or loss.item() <= prev.item() else prev
        total = total + w * eff
        prev = eff if bound == "cumulative" else loss
    return total


def unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


@pytest.mark.parametrize("eps", [EPS, None])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ms_matches_naive(seed, eps):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (12,), generator=g)
    got = MultiSimilarity(miner_epsilon=eps)(emb, labels)
    want = naive_ms(emb, labels, eps=eps)
    assert want.item() > 0
    torch.testing.assert_close(got, want)


def test_ms_gradient_matches_naive():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    (g_got,) = torch.autograd.grad(MultiSimilarity()(emb, labels), emb)
    (g_want,) = torch.autograd.grad(naive_ms(emb, labels), emb)
    assert g_got.abs().sum() > 0
    torch.testing.assert_close(g_got, g_want)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bound", ["cumulative", "parent"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hims_matches_naive(seed, bound, reverse):
    g = torch.Generator().manual_seed(seed)
    model = torch.randint(0, 6, (16,), generator=g)
    labels = {"make": model // 3, "type": model // 2, "model": model}
    emb = torch.randn(16, 6, generator=g, dtype=torch.float64, requires_grad=True)
    # On random embeddings coarse levels have the larger loss, so make->model never
    # triggers the min; the reversed order does (and separates the two bound rules).
    levels = ("model", "type", "make") if reverse else ("make", "type", "model")
    weights = [0.5, 0.3, 0.2]
    total, parts = HiMSMin(levels, weights=weights, bound=bound)(emb, labels)
    want = naive_hims(emb, labels, levels, weights, bound)
    torch.testing.assert_close(total, want)
    (g_got,) = torch.autograd.grad(total, emb)
    (g_want,) = torch.autograd.grad(want, emb)
    torch.testing.assert_close(g_got, g_want)
    assert parts["total"] == pytest.approx(want.item())
    for lvl in levels:
        assert parts[lvl] == pytest.approx(naive_ms(emb, labels[lvl]).item())
        assert parts[f"{lvl}/min"] <= parts[lvl] + 1e-12
    min_active = any(parts[f"{lvl}/min"] < parts[lvl] for lvl in levels)
    assert min_active == reverse  # the case exercises the branch it claims to
    if reverse:
        other = "parent" if bound == "cumulative" else "cumulative"
        alt, _ = HiMSMin(levels, weights=weights, bound=other)(emb, labels)
        assert alt.item() != pytest.approx(total.item())


def _two_level_case(fine_smaller: bool):
    """8 unit vectors on a circle (degrees), two makes of two models each.

    fine_smaller=True: each model is a tight pair but a make's two models sit far
    apart, interleaved with the other make -> L_model < L_make.
    fine_smaller=False: each make is one tight arc holding both its models mixed,
    the makes 24 deg apart -> the model level has the harder negatives.
    """
    if fine_smaller:
        angles, model = [0, 15, 90, 105, 45, 60, 135, 150], [0, 0, 1, 1, 2, 2, 3, 3]
    else:
        angles, model = [0, 2, 4, 6, 30, 32, 34, 36], [0, 1, 0, 1, 2, 3, 2, 3]
    emb = torch.tensor([unit(a) for a in angles], dtype=torch.float64, requires_grad=True)
    make = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    return emb, {"make": make, "model": torch.tensor(model)}


@pytest.mark.parametrize("fine_smaller", [True, False])
def test_min_branches_and_gradient_flow(fine_smaller):
    emb, labels = _two_level_case(fine_smaller)
    loss_fn = HiMSMin(("make", "model"), weights=[1.0, 1.0])
    total, parts = loss_fn(emb, labels)
    l_make = MultiSimilarity()(emb, labels["make"])
    l_model = MultiSimilarity()(emb, labels["model"])
    assert l_make.item() > 0 and l_model.item() > 0
    assert (l_model.item() < l_make.item()) == fine_smaller  # the case really hits this branch
    (g_total,) = torch.autograd.grad(total, emb)
    assert torch.isfinite(g_total).all() and g_total.abs().sum() > 0
    (g_make,) = torch.autograd.grad(l_make, emb, retain_graph=True)
    (g_model,) = torch.autograd.grad(l_model, emb, retain_graph=True)
    if fine_smaller:
        # Fine branch active: the model level's gradient is part of the total.
        torch.testing.assert_close(total, l_make + l_model)
        torch.testing.assert_close(g_total, g_make + g_model)
        assert parts["model/min"] == pytest.approx(parts["model"])
    else:
        # Coarse branch active: the bounded term follows the make loss (twice).
        torch.testing.assert_close(total, 2 * l_make)
        torch.testing.assert_close(g_total, 2 * g_make)
        assert parts["model/min"] == pytest.approx(parts["make"])
    assert not torch.allclose(g_make, g_model)  # so the checks above can tell them apart


def test_every_level_gets_gradient():
    # Each level alone must send gradient back (no .item()/float cut in the chain).
    g = torch.Generator().manual_seed(5)
    model = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    labels = {"make": model // 2, "type": model % 2, "model": model}
    emb = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for lvl in labels:
        total, _ = HiMSMin((lvl,))(emb, labels)
        (grad,) = torch.autograd.grad(total, emb)
        assert total.item() > 0 and grad.abs().sum() > 0, lvl


def test_zero_loss_when_separated_beyond_margins():
    # make A: models at 0 and 30 deg; make B: models at 90 and 120 deg; 2 photos each.
    # model negatives: cos 30 = 0.87 < 1 - eps; make negatives: <= cos 60 = 0.5 < 0.87 - eps.
    angles = [0, 0, 30, 30, 90, 90, 120, 120]
    emb = torch.tensor([unit(a) for a in angles], dtype=torch.float64, requires_grad=True)
    model = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    labels = {"make": model // 2, "type": model // 2, "model": model}
    total, parts = HiMSMin()(emb, labels)
    assert total.item() == 0.0 and all(v == 0.0 for v in parts.values())
    (grad,) = torch.autograd.grad(total, emb)
    assert torch.count_nonzero(grad) == 0
    # Sanity: squeezing the models of make A together makes the model level hard again.
    emb2 = torch.tensor([unit(a) for a in [0, 0, 5, 5, 90, 90, 120, 120]], dtype=torch.float64)
    assert MultiSimilarity()(emb2, model).item() > 0


def test_degenerate_level_no_nan():
    g = torch.Generator().manual_seed(7)
    emb = torch.randn(6, 4, generator=g, requires_grad=True)
    labels = {
        "make": torch.zeros(6, dtype=torch.long),  # no negatives at all
        "type": torch.arange(6),  # no positives at all
        "model": torch.tensor([0, 0, 1, 1, 2, 2]),
    }
    total, parts = HiMSMin()(emb, labels)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(emb.grad).all()
    assert all(math.isfinite(v) for v in parts.values())
    assert parts["make"] == parts["type"] == 0.0
    # Skipped coarse levels must not bound the model level down to 0.
    want = MultiSimilarity()(emb, labels["model"]).item() / 3
    assert want > 0 and total.item() == pytest.approx(want)
    assert emb.grad.abs().sum() > 0
    # All levels degenerate: a zero that still backpropagates.
    emb.grad = None
    total, _ = HiMSMin(("make",))(emb, labels)
    total.backward()
    assert total.item() == 0.0 and torch.count_nonzero(emb.grad) == 0


def test_level_index_and_label_tensors():
    names = ["BMW M3 Coupe 2012", "Audi A4 Sedan 2007", "BMW X5 SUV 2007", "Audi S4 Sedan 2012"]
    table = {
        "make": ["BMW", "Audi", "BMW", "Audi"],
        "type": ["Coupe", "Sedan", "SUV", "Sedan"],
        "model": ["M3", "A4", "X5", "S4"],
    }

    def level_value(label, level):
        return table[level][names.index(label)]

    index = build_level_index(names, level_value, ("make", "type", "model"))
    assert index == {"make": [1, 0, 1, 0], "type": [0, 2, 1, 2], "model": [1, 0, 3, 2]}
    got = level_label_tensors(torch.tensor([3, 0, 0, 2]), index)
    assert got["make"].tolist() == [0, 1, 1, 1]
    assert got["type"].tolist() == [2, 0, 0, 1]
    assert got["model"].dtype == torch.long and got["model"].tolist() == [2, 1, 1, 3]
    with pytest.raises(ValueError, match="out of range"):
        level_label_tensors(torch.tensor([4]), index)


def test_bad_inputs_raise_clear_errors():
    emb = torch.randn(4, 3)
    with pytest.raises(ValueError, match="lacks"):
        HiMSMin()(emb, {"make": torch.tensor([0, 0, 1, 1])})
    with pytest.raises(ValueError, match="one label per embedding"):
        MultiSimilarity()(emb, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        MultiSimilarity()(emb, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        HiMSMin(weights=[1.0])


def test_level_index_from_taxonomy():
    # The training path: class names -> Taxonomy.level_value -> per-level ids.
    from vericar.search.taxonomy import Taxonomy

    names = ["BMW M3 Coupe 2012", "Audi S4 Sedan 2012", "Audi A4 Sedan 2007", "BMW X5 SUV 2007"]
    tax = Taxonomy.from_labels(names)
    index = build_level_index(names, tax.level_value)
    assert set(index) == {"make", "type", "model"}
    labels = level_label_tensors(torch.arange(4), index)
    assert labels["make"].tolist()[1] == labels["make"].tolist()[2] != labels["make"].tolist()[0]
    assert labels["type"].tolist()[1] == labels["type"].tolist()[2]
    assert len(set(labels["model"].tolist())) == 4
    total, _ = HiMSMin()(torch.randn(4, 8, requires_grad=True), labels)
    assert torch.isfinite(total)
