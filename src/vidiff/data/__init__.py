"""Training data: resumable rank-sharded loaders, a folder of captioned videos, a latent cache,
caption-weighted sampling."""

from vidiff.data.folder import BadVideoWarning, VideoFolderDataset, read_captions
from vidiff.data.latent_cache import LatentCacheDataset, LatentCacheError, build_latent_cache, encoder_fingerprint
from vidiff.data.loader import ResumableLoader, SeededBatchStream, derive_seed, shard_positions
from vidiff.data.weighting import caption_sampling_weights, weighted_shares

__all__ = [
    "BadVideoWarning",
    "VideoFolderDataset",
    "read_captions",
    "LatentCacheDataset",
    "LatentCacheError",
    "build_latent_cache",
    "encoder_fingerprint",
    "ResumableLoader",
    "SeededBatchStream",
    "derive_seed",
    "shard_positions",
    "caption_sampling_weights",
    "weighted_shares",
]
