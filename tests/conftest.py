import os

import pytest
import torch

# One intra-op thread: on 2 shared cores more threads make small ops slower, not faster.
torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture
def real_clip() -> str:
    """Path to the real camera clip in ../shared/data (36 frames, 320x240, H.264)."""
    path = os.path.abspath(os.path.join(SHARED, "data", "realshort.mp4"))
    if not os.path.exists(path):
        pytest.skip(f"real clip not found at {path}")
    return path
