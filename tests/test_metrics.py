"""Detection / selective-prediction metrics against hand-computed values."""

import numpy as np
import pytest

from agents.metrics import (
    aurc,
    auroc,
    average_precision,
    detection_delay,
    fpr_at_tpr,
    interval_coverage,
    risk_coverage,
)


def test_auroc_by_hand():
    # pairs (pos > neg): pos 3 beats 1, 2; pos 2.5 beats 1, 2; pos 1.5 beats 1 -> 5 of 6
    assert auroc([1.0, 2.0], [3.0, 2.5, 1.5]) == pytest.approx(5 / 6)
    assert auroc([1.0, 2.0], [2.0]) == pytest.approx(0.75)  # one win, one tie
    assert auroc([0, 0], [1, 1]) == 1.0 and auroc([1, 1], [0, 0]) == 0.0


def test_average_precision_by_hand():
    # ranked: 0.9 P, 0.8 N, 0.7 P, 0.1 N -> precision at positives 1, 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision([0.8, 0.1], [0.9, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.1, 0.2], [0.9, 0.8]) == pytest.approx(1.0)


def test_fpr_at_95_tpr_by_hand():
    pos = np.arange(1, 21, dtype=float)  # 20 positives: 95% recall keeps 19 -> threshold 2
    neg = np.array([0.5, 1.5, 2.0, 3.0])  # 2.0 and 3.0 are >= 2 -> FPR 0.5
    assert fpr_at_tpr(neg, pos) == pytest.approx(0.5)


def test_risk_coverage_and_aurc_by_hand():
    cov, risk = risk_coverage([0.3, 0.1, 0.2], [3.0, 1.0, 2.0])
    np.testing.assert_allclose(cov, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(risk, [1.0, 1.5, 2.0])
    assert aurc([0.3, 0.1, 0.2], [3.0, 1.0, 2.0]) == pytest.approx(1.5)


def test_interval_coverage_gaussian_and_conformal():
    rng = np.random.default_rng(0)
    z = np.abs(rng.normal(size=200_000))  # a well-calibrated Gaussian model
    cov = interval_coverage(z, levels=(0.5, 0.9), z_calib=np.abs(rng.normal(size=20_000)))
    np.testing.assert_allclose(cov["gaussian"], [0.5, 0.9], atol=0.005)
    np.testing.assert_allclose(cov["conformal"], [0.5, 0.9], atol=0.01)
    over = interval_coverage(2 * z, levels=(0.9,), z_calib=2 * np.abs(rng.normal(size=20_000)))
    assert over["gaussian"][0] < 0.7 and abs(over["conformal"][0] - 0.9) < 0.01


def test_detection_delay():
    s = np.array([0, 2, 0, 0, 0, 1, 3, 5])
    assert detection_delay(s, 2.5, 4) == (2, False)
    assert detection_delay(s, 1.5, 4) == (2, True)
    assert detection_delay(s, 9.0, 4) == (None, False)
