"""Detection and selective-prediction metrics (host, numpy): AUROC, AP, FPR at 95% TPR,
risk-coverage / AURC, interval coverage, detection delay. Positives are out-of-distribution.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata


def auroc(neg, pos) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie): the Mann-Whitney U statistic / (n_neg n_pos)."""
    neg, pos = np.asarray(neg, np.float64), np.asarray(pos, np.float64)
    ranks = rankdata(np.concatenate([neg, pos]))  # average ranks handle ties
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(neg) * len(pos)))


def average_precision(neg, pos) -> float:
    """Area under precision-recall, as sum over positives of precision at their rank (ties:
    the whole tied block is taken at once, as scikit-learn does)."""
    scores = np.concatenate([np.asarray(neg, np.float64), np.asarray(pos, np.float64)])
    labels = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tied block
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(neg, pos, tpr: float = 0.95) -> float:
    """False-positive rate at the largest threshold that flags >= `tpr` of the positives."""
    pos = np.sort(np.asarray(pos, np.float64))
    k = int(np.floor((1.0 - tpr) * len(pos)))  # positives allowed below the threshold
    threshold = pos[k]
    return float(np.mean(np.asarray(neg, np.float64) >= threshold))


def risk_coverage(score, loss) -> tuple[np.ndarray, np.ndarray]:
    """Selective prediction: keep the lowest-score fraction c of cases; risk = their mean loss.

    Returns (coverage (n,), risk (n,)) for c = 1/n .. 1 (ascending coverage).
    """
    order = np.argsort(np.asarray(score, np.float64), kind="stable")
    loss = np.asarray(loss, np.float64)[order]
    n = len(loss)
    return np.arange(1, n + 1) / n, np.cumsum(loss) / np.arange(1, n + 1)


def aurc(score, loss) -> float:
    """Area under the risk-coverage curve (mean of the risks at every coverage)."""
    return float(risk_coverage(score, loss)[1].mean())


def interval_coverage(z_test, levels=(0.5, 0.8, 0.9, 0.95), z_calib=None) -> dict:
    """Empirical coverage of central predictive intervals, per nominal level.

    z_test: standardised residuals |y - mean| / sd (any shape). 'gaussian': the interval
    mean ± Phi^-1((1+p)/2) sd as the model states it; 'conformal' (when z_calib is given): the
    half-width is the conformal quantile of z_calib, so coverage >= p on exchangeable data.
    """
    z_test = np.asarray(z_test, np.float64).ravel()
    out = {"nominal": list(levels), "gaussian": [], "conformal": []}
    for p in levels:
        out["gaussian"].append(float(np.mean(z_test <= norm.ppf(0.5 + p / 2))))
        if z_calib is not None:
            zc = np.sort(np.asarray(z_calib, np.float64).ravel())
            k = min(int(np.ceil((len(zc) + 1) * p - 1e-9)), len(zc))
            out["conformal"].append(float(np.mean(z_test <= zc[k - 1])))
    return out


def detection_delay(score, threshold: float, at: int) -> tuple[int | None, bool]:
    """(steps from `at` to the first score > threshold at or after `at` (None: never),
    whether any score before `at` exceeded it: a false alarm)."""
    score = np.asarray(score)
    hits = np.flatnonzero(score[at:] > threshold)
    return (int(hits[0]) if len(hits) else None), bool(np.any(score[:at] > threshold))
