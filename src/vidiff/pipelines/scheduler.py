"""The sampling recipe stored with a pipeline (`scheduler/config.json`): schedule, prediction type,
sampler, step count and timestep shift, turned into a time grid and a sampler call."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor

from vidiff.config import dataclass_from_dict
from vidiff import diffusion as D

SAMPLERS = ("euler", "heun", "unipc", "dpmpp_2m", "ddim", "ddpm")


@dataclass
class SchedulerConfig:
    """How to sample. `schedule` is "flow" (rectified flow) or a VP beta table ("linear",
    "scaled_linear", "cosine"); `shift` is the SD3/Wan timestep shift `s t / (1 + (s - 1) t)`
    applied to the sampling grid (flow only); `context_noise` is the level `t_c` at which long
    videos show each window the frames it holds from earlier windows (`vidiff.pipelines.long`):
    0 holds them clean; models trained with `diffusion.context_noise` read a noisy context and
    then copy less of its small errors from window to window."""

    schedule: str = "flow"
    prediction_type: str = "flow"
    sampler: str = "euler"
    num_inference_steps: int = 16
    shift: float = 1.0
    guidance_scale: float = 4.0
    num_train_steps: int = 1000
    zero_terminal_snr: bool = False
    context_noise: float = 0.0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {SAMPLERS}")
        if self.prediction_type not in D.PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; expected one of {D.PREDICTION_TYPES}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise}")
        if self.schedule != "flow" and self.sampler in ("euler", "heun") and self.prediction_type == "flow":
            raise ValueError("a VP schedule cannot use flow prediction")

    @classmethod
    def from_dict(cls, data: dict) -> "SchedulerConfig":
        return dataclass_from_dict(cls, data, ignore=("_class_name",))

    def to_dict(self) -> dict:
        return asdict(self)

    def make_schedule(self):
        if self.schedule == "flow":
            return D.FlowSchedule()
        return D.vp_schedule(self.schedule, self.num_train_steps, zero_terminal_snr=self.zero_terminal_snr)

    def times(self, sampler: str, steps: int) -> Tensor:
        """The descending time grid `[steps + 1]` for `sampler` (diffusers' placement)."""
        if self.schedule == "flow":
            grid = D.unipc_flow_times if sampler in ("unipc", "dpmpp_2m") else D.flow_times
            return grid(steps, self.shift, self.num_train_steps)
        spacing = "trailing" if self.zero_terminal_snr else "leading"
        return D.vp_times(steps, spacing, self.num_train_steps, multistep=sampler in ("unipc", "dpmpp_2m"))

    def sample(self, denoise, x: Tensor, times: Tensor, sampler: str, *, generator=None, progress=False,
               callback=None) -> Tensor:
        """Run `sampler` over an x0-denoiser from `x` along `times` (`[N+1]` or `[N+1, B, F]`)."""
        schedule = self.make_schedule()
        kw = {"callback": callback, "progress": progress}
        if sampler in ("euler", "heun"):
            fn = D.sample_euler if sampler == "euler" else D.sample_heun
            return fn(denoise, x, times, schedule, form="flow" if self.schedule == "flow" else "karras", **kw)
        if sampler == "unipc":
            return D.sample_unipc(denoise, x, times, schedule, **kw)
        if sampler == "dpmpp_2m":
            return D.sample_dpmpp_2m(denoise, x, times, schedule, **kw)
        if sampler == "ddim":
            return D.sample_ddim(denoise, x, times, schedule, generator=generator, **kw)
        return D.sample_ddpm(denoise, x, times, schedule, generator=generator, **kw)
