"""Sample-quality metrics: FID, KID, class accuracy, a pixel-intensity Wasserstein distance, FID-vs-NFE sweeps,
and the exact error of a sampler on Gaussian data.

All metrics work on plain arrays, `tf.data` datasets or numpy iterables of
images (`uint8`, or floats in [0, 1]), independently of training.
"""

from keras_diffusion.data.images import as_uint8_images, iterate_image_batches
from keras_diffusion.metrics.classifier import (
    CLASSIFIER_ENV_VAR,
    balanced_labels,
    build_mnist_classifier,
    class_accuracy,
    classification_accuracy,
    mnist_classifier,
    train_mnist_classifier,
)
from keras_diffusion.metrics.features import (
    default_feature_extractor,
    extract_features,
    iterate_features,
)
from keras_diffusion.metrics.fid import FID, FIDResult, compute_fid
from keras_diffusion.metrics.frechet import frechet_distance, trace_sqrt_product
from keras_diffusion.metrics.inception import (
    AveragePoolingExcludePadding,
    ConvBatchNormReLU,
    InceptionFeatures,
    build_inception_network,
    load_inception_weights,
)
from keras_diffusion.metrics.inception_weights import WEIGHTS_ENV_VAR, resolve_weights_path
from keras_diffusion.metrics.kid import KID, KIDResult, kernel_inception_distance
from keras_diffusion.metrics.sampler_accuracy import GaussianSamplerError, gaussian_denoiser, gaussian_sampler_error
from keras_diffusion.metrics.sampler_sweep import (
    SweepPoint,
    fid_versus_nfe,
    plot_fid_versus_nfe,
    read_sweep,
    write_sweep,
)
from keras_diffusion.metrics.scores import score_images
from keras_diffusion.metrics.statistics import FeatureStatistics, RunningFeatureStatistics, feature_statistics
from keras_diffusion.metrics.wasserstein import wasserstein_distance

__all__ = [
    "CLASSIFIER_ENV_VAR",
    "FID",
    "KID",
    "AveragePoolingExcludePadding",
    "ConvBatchNormReLU",
    "FIDResult",
    "FeatureStatistics",
    "InceptionFeatures",
    "KIDResult",
    "RunningFeatureStatistics",
    "SweepPoint",
    "WEIGHTS_ENV_VAR",
    "as_uint8_images",
    "balanced_labels",
    "build_inception_network",
    "build_mnist_classifier",
    "class_accuracy",
    "classification_accuracy",
    "compute_fid",
    "default_feature_extractor",
    "extract_features",
    "feature_statistics",
    "fid_versus_nfe",
    "frechet_distance",
    "iterate_features",
    "iterate_image_batches",
    "kernel_inception_distance",
    "load_inception_weights",
    "mnist_classifier",
    "plot_fid_versus_nfe",
    "read_sweep",
    "resolve_weights_path",
    "score_images",
    "trace_sqrt_product",
    "train_mnist_classifier",
    "wasserstein_distance",
    "write_sweep",
]
