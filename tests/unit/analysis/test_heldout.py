"""onnxq.analysis.heldout: the held-out split, per-slice SQNR and the model objective, against hand figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxq.analysis.heldout import (
    SQNR_CAP_DB,
    model_score,
    output_scores,
    ranking_key,
    slice_axis,
    split_feeds,
)


def _one(ref, cand, name="y", **kw):
    """Score one output given as a list of feeds."""
    return output_scores([[r] for r in ref], [[c] for c in cand], [name], **kw)[0]


# ------------------------------------------------------------------------------------------ split

@pytest.mark.parametrize("n", [0, 1, 5, 7])
def test_too_few_feeds_hold_nothing_out(n):
    split = split_feeds(n)
    assert not split.held_out
    assert split.estimation == split.scoring == tuple(range(n))
    assert "in-sample" in split.describe()


@pytest.mark.parametrize("n", list(range(8, 300)) + [1000, 5000])
def test_split_sizes_and_partition(n):
    split = split_feeds(n)
    assert split == split_feeds(n)  # deterministic
    assert split.held_out
    assert len(split.scoring) == min(32, max(2, n // 5))
    assert len(split.scoring) <= max(2, 0.2 * n)
    assert sorted(split.estimation + split.scoring) == list(range(n))
    assert not set(split.estimation) & set(split.scoring)
    assert 0 in split.estimation
    k = split.scoring[1] - split.scoring[0]
    assert split.scoring == tuple(range(k - 1, k * len(split.scoring), k))  # every k-th


def test_split_examples():
    assert split_feeds(8).scoring == (3, 7)
    assert split_feeds(10).scoring == (4, 9)
    assert split_feeds(64).scoring == tuple(range(4, 60, 5))
    assert split_feeds(64).describe() == "12 of 64 calibration feeds held out"
    assert len(split_feeds(200).scoring) == 32


def test_split_spreads_over_a_source_ordered_by_class():
    """Feeds sorted by class (cat_*.npz before dog_*.npz): both classes are held out, not only the last."""
    classes = ["cat"] * 32 + ["dog"] * 32
    held = {classes[i] for i in split_feeds(64).scoring}
    assert held == {"cat", "dog"}


# ------------------------------------------------------------------------------------------ slices

def test_slice_axis_rule():
    assert slice_axis([()]) is None and slice_axis([(5,)]) is None
    assert slice_axis([(1, 1000)]) == 1  # [N, F]: features
    assert slice_axis([(1, 3549, 85)]) == 2  # YOLOX: fields on the last axis
    assert slice_axis([(1, 84, 8400)]) == 1  # YOLOv8 export: fields on axis 1
    assert slice_axis([(1, 40, 18710), (1, 47, 18710)]) == 1  # recogniser: per time step
    assert slice_axis([(1, 7, 7)]) == 2  # equal: the last
    assert slice_axis([(2, 3, 4, 4)]) == 1 and slice_axis([(1, 2, 3, 4, 5)]) == 1  # [N, C, ...]: channels


def test_hand_computed_sqnr():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    cand = np.array([[1.0, 2.0], [4.0, 4.0]], np.float32)
    s = _one([ref], [cand])
    # whole: sum f^2 = 30, sum err^2 = 1
    assert s.sqnr_db == pytest.approx(10 * math.log10(30.0))
    # column 0: P = (1 + 9) / 2 = 5, N = 1 / 2 -> 10 dB; column 1 exact -> the cap
    assert (s.axis, s.slices, s.worst_slice) == (1, 2, 0)
    assert s.worst_sqnr_db == pytest.approx(10.0)
    assert s.mean_slice_sqnr_db == pytest.approx((10.0 + SQNR_CAP_DB) / 2)
    assert s.worst_slice_label == "axis 1 index 0"
    assert model_score([s]) == pytest.approx(10.0)


def test_sums_run_over_all_feeds_not_per_feed_averages():
    refs = [np.array([[1.0]]), np.array([[3.0]])]
    cands = [np.array([[1.0]]), np.array([[4.0]])]
    s = _one(refs, cands)
    assert s.worst_sqnr_db == pytest.approx(10 * math.log10(10.0 / 1.0))


def test_channels_of_nchw_and_whole_rank1():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 3, 4, 4))
    cand = ref.copy()
    cand[:, 2] += 0.5  # channel 2 damaged
    s = _one([ref], [cand])
    assert (s.axis, s.slices, s.worst_slice) == (1, 3, 2)
    v = rng.standard_normal(10)
    w = _one([v], [v + 0.01])
    assert w.axis is None and w.worst_slice_label == "" and w.worst_sqnr_db == pytest.approx(w.sqnr_db)


def test_slice_axis_length_may_vary_between_feeds():
    """Time steps of variable-width text: slice j gathers index j of every feed that has one."""
    rng = np.random.default_rng(1)
    refs = [rng.standard_normal((1, 2, 9)), rng.standard_normal((1, 3, 9))]
    cands = [r.copy() for r in refs]
    cands[1][0, 2] += 1.0  # only the longer feed has step 2
    s = _one(refs, cands)
    assert (s.axis, s.slices, s.worst_slice) == (1, 3, 2)
    assert s.worst_sqnr_db == pytest.approx(10 * math.log10(np.mean(refs[1][0, 2] ** 2)))


def test_rank_varying_between_feeds_scores_whole():
    rng = np.random.default_rng(1)
    refs = [rng.standard_normal((1, 5, 4)), rng.standard_normal((1, 5))]
    s = _one(refs, [r + 0.01 for r in refs])
    assert s.axis is None and "scored whole" in s.note and s.worst_sqnr_db == pytest.approx(s.sqnr_db)


def test_other_dims_may_vary_between_feeds():
    rng = np.random.default_rng(2)
    refs = [rng.standard_normal((1, 7, 4)), rng.standard_normal((1, 3, 4))]
    s = _one(refs, [r * 1.01 for r in refs])
    assert s.axis == 2 and s.slices == 4  # 4 features, fewer than the up to 7 positions
    assert s.worst_sqnr_db == pytest.approx(40.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ YOLOv8-like

def _detector_feeds(n=3):
    """[1, 100, 84]: columns 0-3 boxes in 0..320, 4..83 class scores in 0..1 (one Concat output)."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        y = np.empty((1, 100, 84), np.float32)
        y[..., :4] = rng.uniform(0, 320, (1, 100, 4))
        y[..., 4:] = rng.uniform(0, 1, (1, 100, 80))
        out.append(y)
    return out


def test_destroyed_class_scores_hide_in_the_whole_output_but_not_in_the_worst_slice():
    refs = _detector_feeds()
    step = 320.0 / 127  # one int8 scale shared by boxes and scores (the Concat): every score rounds to 0
    destroyed = [np.round(r / step) * step for r in refs]
    rng = np.random.default_rng(4)
    mild = [r * (1 + 0.03 * rng.standard_normal(r.shape)) for r in refs]  # ~30 dB everywhere

    (d,) = output_scores([[r] for r in refs], [[c] for c in destroyed], ["output0"])
    (m,) = output_scores([[r] for r in refs], [[c] for c in mild], ["output0"])
    assert d.sqnr_db > 30.0  # the boxes carry the energy: the whole output looks fine
    assert d.sqnr_db > m.sqnr_db  # ... even better than the mildly noisy candidate
    assert d.worst_sqnr_db < 1.0  # a score column: its power is all error
    assert d.worst_slice >= 4
    assert 27.0 < m.worst_sqnr_db < 31.0
    assert d.dead_slices == m.dead_slices == 0  # scores are judged against their own power
    assert model_score([m]) > model_score([d])
    assert ranking_key([m]) > ranking_key([d])


def test_channels_first_detector_layout_is_sliced_by_field():
    """YOLOv8 exports [1, 84, 8400]: the fields are on axis 1 there."""
    refs = [np.moveaxis(r, 2, 1) for r in _detector_feeds()]
    step = 320.0 / 127
    (d,) = output_scores([[r] for r in refs], [[np.round(r / step) * step] for r in refs], ["output0"])
    assert d.axis == 1 and d.slices == 84 and d.worst_slice >= 4 and d.worst_sqnr_db < 1.0 and d.sqnr_db > 30.0


def test_small_score_slices_are_judged_on_their_own_power():
    """Scores near 0 at most anchors (power ~1e-4) next to boxes in the hundreds: still judged."""
    rng = np.random.default_rng(5)
    y = np.zeros((1, 1000, 6))
    y[..., :4] = rng.uniform(0, 320, (1, 1000, 4))
    y[..., 4:] = np.where(rng.uniform(size=(1, 1000, 2)) < 0.001, 0.9, 0.001)
    zeroed = y.copy()
    zeroed[..., 5] = 0.0
    s = _one([y], [zeroed])
    assert s.worst_slice == 5 and s.worst_sqnr_db < 1.0


# ------------------------------------------------------------------------------------------ degenerate

def test_zero_and_constant_slices_stay_finite():
    rng = np.random.default_rng(6)
    ref = np.zeros((50, 4))
    ref[:, 0] = rng.standard_normal(50)
    ref[:, 1] = 0.0  # dead feature
    ref[:, 2] = 5.0  # constant feature
    ref[:, 3] = rng.standard_normal(50)
    exact = _one([ref], [ref.copy()])
    assert exact.worst_sqnr_db == exact.sqnr_db == SQNR_CAP_DB and exact.dead_slices == 1

    cand = ref + 1e-3 * rng.standard_normal(ref.shape)
    s = _one([ref], [cand])
    assert all(math.isfinite(v) for v in (s.sqnr_db, s.worst_sqnr_db, s.mean_slice_sqnr_db))
    assert s.dead_slices == 1  # the dead feature is left out of the slice figures, not judged against 0
    assert s.worst_slice != 1
    per = [10 * math.log10(np.mean(ref[:, j] ** 2) / np.mean((cand[:, j] - ref[:, j]) ** 2)) for j in (0, 2, 3)]
    assert s.worst_sqnr_db == pytest.approx(min(per))
    assert s.mean_slice_sqnr_db == pytest.approx(np.mean(per))
    assert per[1] == pytest.approx(74.0, abs=1.0)  # the constant feature: against its value, 10 log10(25 / 1e-6)


def test_noise_in_a_dead_slice_counts_against_the_whole_output():
    rng = np.random.default_rng(8)
    ref = rng.standard_normal((100, 3))
    ref[:, 1] = 0.0
    cand = ref.copy()
    cand[:, 1] = 0.5 * rng.standard_normal(100)  # the candidate fills the dead feature with noise
    s = _one([ref], [cand])
    assert s.dead_slices == 1 and s.worst_slice is None and s.worst_slice_label == ""
    assert s.worst_sqnr_db == pytest.approx(s.sqnr_db) and s.sqnr_db < 10.0
    assert s.mean_slice_sqnr_db == SQNR_CAP_DB  # the live slices are exact


def test_all_zero_float_output():
    z = np.zeros((2, 3))
    assert _one([z], [z.copy()]).worst_sqnr_db == SQNR_CAP_DB
    s = _one([z], [z + 0.1])
    assert not s.scored and "0 on every scoring feed" in s.note
    assert model_score([s]) == -SQNR_CAP_DB  # nothing scored


def test_non_finite_values():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    bad = ref.copy()
    bad[0, 0] = np.nan
    s = _one([ref], [bad])
    assert s.worst_sqnr_db == -SQNR_CAP_DB and s.sqnr_db == -SQNR_CAP_DB and s.worst_slice == 0
    ref_inf = ref.copy()
    ref_inf[1, 1] = np.inf
    t = _one([ref_inf], [ref.copy()])
    assert "1 non-finite float values left out" in t.note and t.worst_sqnr_db == SQNR_CAP_DB


# ------------------------------------------------------------------------------------------ non-float, shapes

def test_integer_outputs_by_exact_match_rate():
    ref = np.array([0, 1, 2, 3], np.int64)
    s = _one([ref], [np.array([0, 1, 2, 4], np.int64)])
    assert s.kind == "exact" and s.match_rate == 0.75
    assert s.worst_sqnr_db == pytest.approx(-10 * math.log10(0.25))
    assert _one([ref], [ref.copy()]).worst_sqnr_db == SQNR_CAP_DB
    assert _one([ref > 1], [ref > 1]).kind == "exact"  # bool too


def test_shape_mismatch_is_skipped_and_does_not_decide():
    good = np.ones((1, 4))
    scores = output_scores([[np.ones((3, 4)), good]], [[np.ones((2, 4)), good * 1.1]], ["boxes", "logits"])
    assert not scores[0].scored and "shape" in scores[0].note
    assert model_score(scores) == pytest.approx(scores[1].worst_sqnr_db)


def test_model_score_is_the_worst_output_and_the_mean_breaks_ties():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((4, 8)), rng.standard_normal((4, 8))
    s = output_scores([[a, b]], [[a * 1.1, b * 1.01]], ["a", "b"])
    assert model_score(s) == pytest.approx(min(s[0].worst_sqnr_db, s[1].worst_sqnr_db))
    assert model_score(s) == pytest.approx(20.0, abs=1e-6)
    better_b = output_scores([[a, b]], [[a * 1.1, b * 1.001]], ["a", "b"])
    assert model_score(better_b) == pytest.approx(model_score(s))
    assert ranking_key(better_b) > ranking_key(s)


def test_feed_count_mismatch_raises():
    with pytest.raises(ValueError, match="feeds"):
        output_scores([[np.ones(2)]], [], ["y"])


@pytest.mark.parametrize("bad,slices,tail_low", [(1, 100, False), (4, 100, False), (5, 100, True), (1, 20, True),
                                                 (2, 22, True)])
def test_tail_is_the_twentieth_worst_slice(bad, slices, tail_low):
    """Slices at 30 dB but ``bad`` of them at 6 dB (noise power a quarter of the signal): the tail figure is
    the ceil(5 %)-th worst live slice, so four outlier slices of 100 leave it high, five bring it low."""
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((40, slices))
    noise = rng.standard_normal((40, slices))
    noise /= np.sqrt((noise**2).mean(axis=0))
    gain = np.where(np.arange(slices) < bad, 10 ** (-6 / 20), 10 ** (-30 / 20))
    cand = ref + noise * np.sqrt((ref**2).mean(axis=0)) * gain
    score = _one([ref], [cand])
    k = math.ceil(0.05 * slices)
    per = np.sort(10 * np.log10((ref**2).sum(axis=0) / ((ref - cand) ** 2).sum(axis=0)))
    assert score.tail_db == pytest.approx(min(per[k - 1], score.sqnr_db), abs=1e-6)  # the hand-sorted reference
    assert score.worst_sqnr_db == pytest.approx(per[0], abs=1e-6)
    assert (score.tail_db < 10.0) is tail_low


# ------------------------------------------------------------------------------------------ probabilities

def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_distribution_axis_is_found_from_the_values():
    from onnxq.analysis.heldout import distribution_axis
    rng = np.random.default_rng(0)
    assert distribution_axis([_softmax(rng.normal(size=(4, 7)), 1) for _ in range(3)]) == 1
    assert distribution_axis([_softmax(rng.normal(size=(1, 5, 9)), 2)]) == 2  # [N, T, C] recogniser
    assert distribution_axis([_softmax(rng.normal(size=(1, 3, 4, 4)), 1)]) == 1  # segmentation map
    sigmoid = 1 / (1 + np.exp(-rng.normal(size=(4, 7))))
    assert distribution_axis([sigmoid]) is None  # in [0, 1] but rows do not sum to 1
    assert distribution_axis([np.ones((4, 1))]) is None  # one class: nothing to compare
    one_off = [_softmax(rng.normal(size=(4, 7)), 1), sigmoid]
    assert distribution_axis(one_off) is None  # every feed must be a distribution
    bad = _softmax(rng.normal(size=(4, 7)), 1)
    bad[0, 0] = np.nan
    assert distribution_axis([bad]) is None


def test_centred_log_gives_back_the_logits_less_their_mean():
    from onnxq.analysis.heldout import centred_log
    logits = np.array([[2.0, -1.0, 0.5], [10.0, 9.5, -30.0]])
    got = centred_log(_softmax(logits, 1), 1)
    np.testing.assert_allclose(got, logits - logits.mean(axis=1, keepdims=True), atol=1e-9)
    # a probability float32 rounds to 0 is floored, not -inf
    assert np.isfinite(centred_log(np.array([[1.0, 0.0]], np.float32), 1)).all()


def test_a_probability_output_is_scored_on_its_centred_logits():
    rng = np.random.default_rng(1)
    logits = [rng.normal(scale=3.0, size=(2, 5)) for _ in range(6)]
    noisy = [x + rng.normal(scale=0.2, size=x.shape) for x in logits]
    probs = [_softmax(x, 1).astype(np.float32) for x in logits]
    noisy_probs = [_softmax(x, 1).astype(np.float32) for x in noisy]
    score = _one(probs, noisy_probs, log_probabilities=True)
    # the reference by hand: per class column over all feeds, logits centred per row
    f = np.concatenate([x - x.mean(1, keepdims=True) for x in logits])
    q = np.concatenate([x - x.mean(1, keepdims=True) for x in noisy])
    whole = 10 * np.log10((f ** 2).sum() / ((f - q) ** 2).sum())
    cols = 10 * np.log10((f ** 2).sum(0) / ((f - q) ** 2).sum(0))
    assert score.sqnr_db == pytest.approx(whole, abs=1e-3)
    assert score.worst_sqnr_db == pytest.approx(min(cols.min(), whole), abs=1e-3)
    assert score.mean_slice_sqnr_db == pytest.approx(cols.mean(), abs=1e-3)
    assert "log-probabilities" in score.note
    plain = _one(probs, noisy_probs)  # the figures poor is judged on: the probabilities as they are
    p_f, p_q = np.concatenate(probs).astype(np.float64), np.concatenate(noisy_probs).astype(np.float64)
    assert plain.sqnr_db == pytest.approx(10 * np.log10((p_f ** 2).sum() / ((p_f - p_q) ** 2).sum()), abs=1e-3)
    assert plain.note == ""


def test_a_borderline_sample_does_not_decide_a_probability_score():
    """Two samples near 50/50 and many sure ones: the same small logit noise everywhere. On probabilities
    the borderline samples carry nearly all the error power (softmax squeezes it out of the sure ones), so
    moving the noise onto them alone would barely change a probability score; on logits it counts as
    what it is, a small part of the noise."""
    rng = np.random.default_rng(2)
    sure = [np.array([[8.0, -8.0]]) + rng.normal(scale=0.5, size=(1, 2)) for _ in range(30)]
    border = [np.array([[0.1, -0.1]]), np.array([[-0.1, 0.1]])]
    logits = sure + border
    noise = [rng.normal(scale=0.3, size=(1, 2)) for _ in logits]
    everywhere = [x + n for x, n in zip(logits, noise)]
    border_only = [x + (n if k >= 30 else 0.0) for k, (x, n) in enumerate(zip(logits, noise))]
    probs = lambda xs: [_softmax(x, 1) for x in xs]
    s_all = _one(probs(logits), probs(everywhere), log_probabilities=True)
    s_border = _one(probs(logits), probs(border_only), log_probabilities=True)
    # on logits: 30 of 32 samples' noise removed is ~12 dB better; probabilities would show ~0 dB
    assert s_border.sqnr_db - s_all.sqnr_db > 8.0
    p_f = np.concatenate(probs(logits))
    p_all, p_border = np.concatenate(probs(everywhere)), np.concatenate(probs(border_only))
    prob_gap = 10 * np.log10(((p_f - p_all) ** 2).sum() / ((p_f - p_border) ** 2).sum())
    assert prob_gap < 1.0  # what the probability score would have said
