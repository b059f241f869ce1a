"""Optical flow helpers for the temporal metrics: DIS flow, backward warping, occlusion masks.

Flow convention used everywhere here: ``flow[y, x] = (dx, dy)`` maps a pixel ``x`` of the *source*
frame to ``x + flow(x)`` in the *target* frame, so ``source(x) ~= target(x + flow(x))``.
Flows are float32 ``[H, W, 2]`` in pixels.

OpenCV is an optional dependency (``pip install vidiff[metrics]``); it is imported on first use.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

DIS_PRESETS = ("ultrafast", "fast", "medium")


def import_cv2():
    """Import OpenCV or fail with the install hint."""
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the temporal video metrics need OpenCV: pip install vidiff[metrics]"
        ) from err
    return cv2


@contextlib.contextmanager
def single_threaded_cv2() -> Iterator[None]:
    """Run OpenCV with one thread inside the block (DIS is only bit-reproducible that way)."""
    cv2 = import_cv2()
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _grey(frame: np.ndarray) -> np.ndarray:
    cv2 = import_cv2()
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def dis_flow(source: np.ndarray, target: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense optical flow from ``source`` to ``target`` (uint8 RGB ``[H, W, 3]``) with OpenCV DIS.

    DIS (Kroeger et al. 2016) on the grey images; ``preset`` is one of ``ultrafast``, ``fast``,
    ``medium`` (default: medium, end-point error 0.35-0.53 px on moving discs, ~9 ms for a 256x256
    pair on one core). Call inside :func:`single_threaded_cv2` for bit-reproducible results.
    Returns float32 ``[H, W, 2]`` with ``source(x) ~= target(x + flow(x))``.
    """
    cv2 = import_cv2()
    if preset not in DIS_PRESETS:
        raise ValueError(f"DIS preset {preset!r} is not one of {DIS_PRESETS}")
    code = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }[preset]
    if source.shape != target.shape:
        raise ValueError(f"flow needs frames of one size, got {source.shape} and {target.shape}")
    h, w = source.shape[:2]
    dis = cv2.DISOpticalFlow_create(code)
    # DIS picks its coarsest pyramid level from the image size (formula from OpenCV's dis_flow.cpp);
    # when that lands below the preset's finest level (short or very elongated frames) OpenCV
    # reads uninitialised buffers and can crash the process, so the finest level is lowered.
    patch = dis.getPatchSize()
    coarsest = min(
        int(math.log(max(w, h) / (4.0 * patch)) / math.log(2.0) + 0.5),
        int(math.log(min(w, h) / patch) / math.log(2.0)),
    )
    if coarsest < 0 or min(w, h) < patch:
        raise ValueError(
            f"frames of {h}x{w} are too small for DIS optical flow (preset {preset}: short side >= "
            f"{patch} px and long side >= {math.ceil(patch * 2**0.5)} px)"
        )
    if coarsest < dis.getFinestScale():
        dis.setFinestScale(coarsest)
    flow = dis.calc(_grey(source), _grey(target), None)
    return np.asarray(flow, dtype=np.float32)


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``x + flow(x)``: ``out(x) = image(x + flow(x))`` (bilinear).

    With ``flow`` the flow from frame A to frame B, ``backward_warp(B, flow)`` brings B into A's
    pixel grid. Samples outside the image repeat the border (as FlowNet2's Resample2d does).
    Works for any channel count (images or flow fields); returns float32.
    """
    cv2 = import_cv2()
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(
        np.asarray(image, dtype=np.float32), map_x, map_y,
        interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of the source frame where the forward flow cannot be trusted (Lai et al. 2018).

    With ``fw`` the flow source -> target and ``bw`` target -> source, and
    ``bw_w(x) = bw(x + fw(x))`` (the backward flow brought into the source grid), a pixel is
    occluded if the round trip does not come back,

        |fw + bw_w|^2 > 0.01 (|fw|^2 + |bw_w|^2) + 0.5,

    or it lies on a motion boundary of the forward flow,

        |grad fw_x|^2 + |grad fw_y|^2 > 0.01 |fw|^2 + 0.002,

    with forward differences (zero in the last row/column). These are the thresholds of
    Sundaram et al. 2010 as used by Lai et al.'s warping-error code. Returns bool ``[H, W]``.
    """
    bw_w = backward_warp(backward, forward)
    round_trip = np.sum((forward + bw_w) ** 2, axis=-1)
    magnitudes = np.sum(forward**2, axis=-1) + np.sum(bw_w**2, axis=-1)
    inconsistent = round_trip > 0.01 * magnitudes + 0.5

    grad_sq = np.zeros(forward.shape[:2], dtype=np.float32)
    for c in range(2):
        du = np.zeros(forward.shape[:2], dtype=np.float32)
        dv = np.zeros(forward.shape[:2], dtype=np.float32)
        du[:, :-1] = forward[:, :-1, c] - forward[:, 1:, c]
        dv[:-1, :] = forward[:-1, :, c] - forward[1:, :, c]
        grad_sq += du**2 + dv**2
    boundary = grad_sq > 0.01 * np.sum(forward**2, axis=-1) + 0.002
    return inconsistent | boundary
