"""vidiff: latent video diffusion — train, run and measure text-to-video and image-to-video models.

Layers (a lower layer never imports an upper one)::

    video, diffusion  ->  nn  ->  models  ->  world, metrics, data  ->  train, pipelines, compat  ->  cli
"""

__version__ = "0.1.0"
