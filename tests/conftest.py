import os

import pytest
import torch

# Two cores are shared by the suite; one intra-op thread per process keeps runs predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture
def real_clip() -> str:
    """Path to the real camera clip in ../shared/data (36 frames, 320x240, H.264)."""
    path = os.path.abspath(os.path.join(SHARED, "data", "realshort.mp4"))
    if not os.path.exists(path):
        pytest.skip(f"real clip not found at {path}")
    return path
