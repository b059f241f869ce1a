"""Generation pipelines: `VideoPipeline` (text-to-video, image-to-video, continuation)."""

from vidiff.pipelines.pipeline import PipelineConfig, PipelineOutput, VideoPipeline
from vidiff.pipelines.long import generate_long, iter_windows
from vidiff.pipelines.scheduler import SAMPLERS, SchedulerConfig

__all__ = ["VideoPipeline", "PipelineConfig", "PipelineOutput", "SchedulerConfig", "SAMPLERS", "generate_long", "iter_windows"]
