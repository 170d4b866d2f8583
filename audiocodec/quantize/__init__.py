"""Quantizers: EMA Euclidean VQ, residual VQ with quantizer dropout, DAC-style factorized codes."""
from .factorized import FactorizedVectorQuantizer, factorized_rvq, nearest_cosine
from .rvq import ResidualVQ, euclidean_rvq
from .vq import EuclideanCodebook, QuantizerOutput, VectorQuantizer, kmeans, nearest_code

__all__ = ["ResidualVQ", "euclidean_rvq", "EuclideanCodebook", "QuantizerOutput", "VectorQuantizer",
           "kmeans", "nearest_code", "FactorizedVectorQuantizer", "factorized_rvq",
           "nearest_cosine"]
