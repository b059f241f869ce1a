"""Diffusion math with no networks: schedules, prediction types, training timesteps, objectives,
samplers over a denoiser, classifier-free guidance and initial-noise priors.

Time is continuous, t in [0, 1], t = 0 clean, t = 1 noise: `x_t = alpha(t) x0 + sigma(t) eps`.
"""

from .guidance import guidance_ramp, guided_denoiser, history_guided_denoiser
from .noise import independent_noise, mixed_noise, progressive_noise
from .objectives import add_noise, diffusion_loss, foreground_weights, per_frame_time
from .prediction import PREDICTION_TYPES, from_x0_eps, schedule_coefficients, to_x0_eps, x0_denoiser
from .samplers import (
    DEFAULT_STEPS,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_unipc,
)
from .schedules import (
    FlowSchedule,
    VPSchedule,
    broadcast_time,
    rescale_zero_terminal_snr,
    timestep_shift,
    vp_betas,
    vp_schedule,
)
from .time_grids import flow_times, unipc_flow_times, vp_times, vp_timesteps
from .timesteps import logit_normal_timesteps, uniform_timesteps

__all__ = [
    "FlowSchedule", "VPSchedule", "vp_schedule", "vp_betas", "rescale_zero_terminal_snr",
    "timestep_shift", "broadcast_time",
    "PREDICTION_TYPES", "to_x0_eps", "from_x0_eps", "x0_denoiser", "schedule_coefficients",
    "uniform_timesteps", "logit_normal_timesteps",
    "add_noise", "diffusion_loss", "foreground_weights", "per_frame_time",
    "flow_times", "unipc_flow_times", "vp_times", "vp_timesteps",
    "DEFAULT_STEPS", "sample_ddpm", "sample_ddim", "sample_euler", "sample_heun", "sample_dpmpp_2m",
    "sample_unipc",
    "guided_denoiser", "guidance_ramp", "history_guided_denoiser",
    "independent_noise", "mixed_noise", "progressive_noise",
]
