"""Evaluation metrics: FID (Inception or any feature extractor), IS, CLIP score, fashion-domain FID
and accuracy with a small CNN, and the statistics of paired comparisons (exact McNemar, Holm,
bootstrap intervals, the pre-registered decision rule).

All image inputs are float tensors in [-1, 1], shape (B, C, H, W), the range the generators produce.
Heavy dependencies (transformers) are imported only by the functions that need them.
"""

from bigain.metrics.clip import clip_score, load_clip
from bigain.metrics.fashion import CNNFeatureExtractor, classifier_accuracy, classifier_correct, fashion_fid
from bigain.metrics.fid import (
    FeatureExtractor,
    FeatureStats,
    compute_features,
    compute_fid,
    compute_stats,
    fid_from_features,
    frechet_distance,
    iter_batches,
    stats_cache_key,
)
from bigain.metrics.inception import (
    FIDInceptionV3,
    InceptionExtractor,
    compute_inception_score,
    inception_score,
    load_fid_inception,
)
from bigain.metrics.stats import (
    accuracy_decision,
    fid_diff_bootstrap,
    generation_decision,
    holm,
    mcnemar,
    paired_diff_interval,
    wilson_interval,
)

__all__ = [
    "accuracy_decision",
    "fid_diff_bootstrap",
    "generation_decision",
    "holm",
    "paired_diff_interval",
    "wilson_interval",
    "CNNFeatureExtractor",
    "FIDInceptionV3",
    "FeatureExtractor",
    "FeatureStats",
    "InceptionExtractor",
    "classifier_accuracy",
    "classifier_correct",
    "clip_score",
    "compute_features",
    "compute_fid",
    "compute_inception_score",
    "compute_stats",
    "fashion_fid",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "iter_batches",
    "load_clip",
    "load_fid_inception",
    "mcnemar",
    "stats_cache_key",
]
