"""cliplab: train CLIP models with PyTorch Lightning and Hydra."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${cliplab.cwd:}` in configs: the launch directory, resolvable everywhere, also where `${hydra:...}`
# is not (a multirun sweeper resolves hydra.sweep.dir before any job exists).
OmegaConf.register_new_resolver("cliplab.cwd", os.getcwd, replace=True)
