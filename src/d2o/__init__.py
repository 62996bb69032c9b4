"""D2O reproduction: diffusion models as generative pre-training for one-step generators."""

__version__ = "0.1.0"
