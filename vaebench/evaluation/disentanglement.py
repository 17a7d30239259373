"""Disentanglement scores with disentanglement_lib's definitions: MIG, DCI, SAP and the FactorVAE score.

Pure functions of numpy arrays: representations `mus` (N, L), the posterior means of N images, and the
discrete factor codes `codes` (N, K) int that rendered them. Each one follows
google-research/disentanglement_lib (evaluation/metrics/{mig,dci,sap_score,factor_vae,utils}.py) line for
line, with rows as samples where the lib has columns, and is checked on the lib's own known answers in
tests/test_disentanglement.py. Mutual informations and entropies are in nats; every score is
dimensionless, higher is better. The lib's sample counts (its unsupervised_study_v1 configs) are
`LIB_DEFAULTS`; scores made with fewer samples are not comparable to published ones.

Where the lib leaves something to chance or undefined, this module says what it does instead:
DCI's boosted trees get `random_state=0` (the lib leaves it unset: ties between split features are broken
at random), and MIG and SAP with a single latent compare it with a second one that carries nothing (the
lib fails on an index error).

>>> rng = np.random.default_rng(0)
>>> codes = rng.integers(0, 4, size=(500, 3))
>>> round(mig(codes.astype(float), codes), 2)  # the factors themselves (plug-in MI: not exactly 1)
0.99
>>> mig(np.hstack([codes, codes]).astype(float), codes)  # two latents per factor: no gap
0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats
from sklearn import ensemble, metrics, svm

# disentanglement_lib's settings (config/unsupervised_study_v1/metric_configs/*.gin)
LIB_DEFAULTS = {
    "num_train": 10_000,  # MIG, DCI, SAP: images the scores are fitted on
    "num_test": 5_000,  # DCI, SAP: images they are tested on
    "num_bins": 20,  # MIG: histogram bins of each latent
    "factor_vae_batch_size": 64,  # FactorVAE: images per vote (one factor held fixed)
    "factor_vae_num_train": 10_000,  # votes the majority-vote classifier is fitted on
    "factor_vae_num_eval": 5_000,  # votes it is tested on
    "factor_vae_num_variance_estimate": 10_000,  # images of the global variances
}
PRUNE_THRESHOLD = 0.05  # FactorVAE: latents whose global standard deviation is below this are ignored


# ----------------------------------------------------------------------------- MIG


def histogram_discretize(mus: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """(N, L) -> (N, L) int in 1..num_bins: each latent binned on num_bins equal bins over its range.

    The lib's `_histogram_discretize`: np.digitize on the left edges of np.histogram's bins.
    """
    out = np.zeros(mus.shape, dtype=np.int64)
    for i in range(mus.shape[1]):
        out[:, i] = np.digitize(mus[:, i], np.histogram(mus[:, i], num_bins)[1][:-1])
    return out


def discrete_mutual_info(binned: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(L, K) nats: I(latent i; factor j) of the discrete latents `binned` (N, L) and codes (N, K)."""
    return np.array(
        [
            [metrics.mutual_info_score(codes[:, j], binned[:, i]) for j in range(codes.shape[1])]
            for i in range(binned.shape[1])
        ]
    ).reshape(binned.shape[1], codes.shape[1])


def discrete_entropy(codes: np.ndarray) -> np.ndarray:
    """(K,) nats: the empirical entropy H(factor j) of the codes (N, K), as I(v_j; v_j)."""
    return np.array([metrics.mutual_info_score(codes[:, j], codes[:, j]) for j in range(codes.shape[1])])


def _top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """(K,): per column of (L, K), the largest entry minus the second (0 when there is no second)."""
    top = np.sort(matrix, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(matrix.shape[1])
    return top[0] - second


def mig(mus: np.ndarray, codes: np.ndarray, num_bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018, "Isolating sources of disentanglement in VAEs").

    MIG = mean over factors j of (I(z_a; v_j) - I(z_b; v_j)) / H(v_j), where z_a and z_b are the latents
    with the largest and second largest mutual information with v_j. Each latent of `mus` (N, L) is binned
    on `num_bins` equal bins (`histogram_discretize`); I and H are the plug-in estimates of sklearn's
    mutual_info_score (nats). Range [0, 1]: 1 when each factor is captured by exactly one latent and no
    other latent knows anything about it. A factor that never varies in `codes` has H = 0 and makes the
    score NaN, as in the lib. Reference: disentanglement_lib mig.py (`_compute_mig`, key
    "discrete_mig"); lib defaults num_train = 10,000 images, 20 bins.
    """
    info = discrete_mutual_info(histogram_discretize(mus, num_bins), codes)  # (L, K)
    return float(np.mean(_top_two_gap(info) / discrete_entropy(codes)))


# ----------------------------------------------------------------------------- DCI


@dataclass(frozen=True)
class DCIScores:
    disentanglement: float
    completeness: float
    informativeness_train: float  # mean over factors of the classifier's train accuracy
    informativeness_test: float  # the same on the test images: DCI's informativeness
    importance: np.ndarray  # (L, K): |feature importance| of latent i in the classifier of factor j


def importance_gbt(
    mus_train: np.ndarray, codes_train: np.ndarray, mus_test: np.ndarray, codes_test: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """(importance (L, K), mean train accuracy, mean test accuracy) of one gradient-boosted classifier
    per factor (sklearn's defaults: 100 stages of depth-3 trees), as the lib's `compute_importance_gbt`."""
    num_latents, num_factors = mus_train.shape[1], codes_train.shape[1]
    importance = np.zeros((num_latents, num_factors), dtype=np.float64)
    train_acc, test_acc = [], []
    for j in range(num_factors):
        model = ensemble.GradientBoostingClassifier(random_state=0)
        model.fit(mus_train, codes_train[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(mus_train) == codes_train[:, j]))
        test_acc.append(np.mean(model.predict(mus_test) == codes_test[:, j]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix (L latents, K factors), in [0, 1].

    Each latent scores 1 - H_K(p_i), p_i its importance distribution over the factors (entropy in base K,
    1e-11 added to every entry as in the lib); the scores are weighted by each latent's share of the total
    importance (equal weights when the matrix is all zero, which scores 0).
    """
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])  # (L,)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    return float(np.sum(per_code * importance.sum(axis=1) / importance.sum()))


def completeness(importance: np.ndarray) -> float:
    """DCI completeness: as `disentanglement` with the roles swapped, each factor's importance
    distribution over the L latents (entropy in base L), weighted by the factor's share of importance."""
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])  # (K,)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    return float(np.sum(per_factor * importance.sum(axis=0) / importance.sum()))


def dci(
    mus_train: np.ndarray, codes_train: np.ndarray, mus_test: np.ndarray, codes_test: np.ndarray
) -> DCIScores:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018, "A framework for the
    quantitative evaluation of disentangled representations").

    A GradientBoostingClassifier predicts each factor from all latents; its feature importances make the
    matrix R (L, K) of `disentanglement` and `completeness` (both in [0, 1], 1: each latent serves one
    factor / each factor lives in one latent). Informativeness is the classifiers' mean accuracy on the
    test images (in [0, 1]; chance is 1/levels). Reference: disentanglement_lib dci.py (`_compute_dci`);
    lib defaults num_train = 10,000, num_test = 5,000 images.
    """
    importance, train_acc, test_acc = importance_gbt(mus_train, codes_train, mus_test, codes_test)
    return DCIScores(disentanglement(importance), completeness(importance), train_acc, test_acc, importance)


# ----------------------------------------------------------------------------- SAP


def sap_score_matrix(
    mus_train: np.ndarray,
    codes_train: np.ndarray,
    mus_test: np.ndarray,
    codes_test: np.ndarray,
    continuous_factors: bool = False,
) -> np.ndarray:
    """(L, K): how well latent i alone predicts factor j, the lib's `compute_score_matrix`.

    Discrete factors: the test accuracy of LinearSVC(C=0.01, class_weight="balanced") fitted on that one
    latent. Continuous factors: the squared correlation on the train images (0 for a constant latent).
    """
    num_latents, num_factors = mus_train.shape[1], codes_train.shape[1]
    score = np.zeros((num_latents, num_factors))
    for i in range(num_latents):
        for j in range(num_factors):
            mu_i, y_j = mus_train[:, i], codes_train[:, j]
            if continuous_factors:
                cov = np.cov(mu_i, y_j, ddof=1)
                score[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(mu_i[:, None], y_j)
                score[i, j] = np.mean(classifier.predict(mus_test[:, i, None]) == codes_test[:, j])
    return score


def sap(
    mus_train: np.ndarray,
    codes_train: np.ndarray,
    mus_test: np.ndarray,
    codes_test: np.ndarray,
    continuous_factors: bool = False,
) -> float:
    """Separated attribute predictability (Kumar et al. 2018, "Variational inference of disentangled latent
    concepts from unlabeled observations").

    SAP = mean over factors of the gap between the best and second best single-latent predictors of it
    (`sap_score_matrix`). Range [0, 1]; with discrete factors the best accuracy is at most 1 and the
    second is at least about chance (balanced classes), so even a perfect representation of a factor with
    n values scores about 1 - 1/n at most. Reference: disentanglement_lib sap_score.py (`_compute_sap`,
    "SAP_score"); lib defaults num_train = 10,000, num_test = 5,000, continuous_factors = False.
    """
    matrix = sap_score_matrix(mus_train, codes_train, mus_test, codes_test, continuous_factors)
    return float(np.mean(_top_two_gap(matrix)))


# ----------------------------------------------------------------------------- FactorVAE


@dataclass(frozen=True)
class FactorVAEScores:
    train_accuracy: float
    eval_accuracy: float  # the FactorVAE score
    num_active_dims: int  # latents whose global standard deviation is at least the prune threshold


def factor_vae_votes(
    batches: np.ndarray, fixed: np.ndarray, global_variances: np.ndarray, active: np.ndarray, num_factors: int
) -> np.ndarray:
    """(K, L) int64 votes: for each batch b (V, B, L) with factor fixed[b] held fixed, one vote for
    (fixed[b], the active latent of least variance relative to its global variance), ddof = 1."""
    local = np.var(batches, axis=1, ddof=1)  # (V, L)
    argmin = np.flatnonzero(active)[np.argmin(local[:, active] / global_variances[active], axis=1)]
    votes = np.zeros((num_factors, batches.shape[2]), dtype=np.int64)
    np.add.at(votes, (fixed, argmin), 1)
    return votes


def factor_vae_score(
    variance_mus: np.ndarray,
    train_batches: np.ndarray,
    train_fixed: np.ndarray,
    eval_batches: np.ndarray,
    eval_fixed: np.ndarray,
    num_factors: int,
    prune_threshold: float = PRUNE_THRESHOLD,
) -> FactorVAEScores:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018, "Disentangling by factorising").

    Global variances of each latent come from `variance_mus` (M, L) (ddof = 1); latents whose standard
    deviation is below `prune_threshold` are ignored. Each vote is a batch (B, L) of images with one
    factor (its `fixed` entry) held at one value: the latent of least variance, divided by its global
    variance, votes for that factor. The classifier maps each latent to the factor it got most train
    votes for (argmax, ties to the first); the score is the share of eval votes it gets right, in [0, 1]
    (chance about 1/K). Without an active latent both accuracies are 0. Reference: disentanglement_lib
    factor_vae.py (`compute_factor_vae`, "eval_accuracy"); lib defaults batch_size = 64, num_train =
    10,000 and num_eval = 5,000 votes, num_variance_estimate = 10,000 images, prune_dims.threshold = 0.05.

    The lib's votes index the latent among the active ones only and its "num_active_dims" counts every
    latent; the accuracies are the same either way (the labels are only renamed); here the latent keeps
    its own index and num_active_dims counts the active ones.
    """
    global_variances = np.var(variance_mus, axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return FactorVAEScores(0.0, 0.0, 0)
    train_votes = factor_vae_votes(train_batches, train_fixed, global_variances, active, num_factors)
    classifier = np.argmax(train_votes, axis=0)  # (L,): the factor each latent stands for
    latents = np.arange(train_votes.shape[1])
    eval_votes = factor_vae_votes(eval_batches, eval_fixed, global_variances, active, num_factors)
    return FactorVAEScores(
        float(train_votes[classifier, latents].sum() / train_votes.sum()),
        float(eval_votes[classifier, latents].sum() / eval_votes.sum()),
        int(active.sum()),
    )
