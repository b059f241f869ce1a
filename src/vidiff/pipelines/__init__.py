"""Generation pipelines: `VideoPipeline` (text-to-video, image-to-video, continuation)."""

from vidiff.pipelines.pipeline import PipelineConfig, PipelineOutput, VideoPipeline
from vidiff.pipelines.scheduler import SAMPLERS, SchedulerConfig

__all__ = ["VideoPipeline", "PipelineConfig", "PipelineOutput", "SchedulerConfig", "SAMPLERS"]
