"""cliplab: train CLIP models with PyTorch Lightning and Hydra."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${cliplab.cwd:}` in configs: the launch directory, resolvable everywhere, also where `${hydra:...}`
# is not (a multirun sweeper resolves hydra.sweep.dir before any job exists).
OmegaConf.register_new_resolver("cliplab.cwd", os.getcwd, replace=True)


def _epochs_for_precision(half_precision_epochs: int, fp32_epochs: int, *, _root_) -> int:
    # imported on first use: `import cliplab` stays free of torch
    from cliplab.utils.host_precision import epochs_for_precision

    return epochs_for_precision(half_precision_epochs, fp32_epochs, _root_.get("trainer") or {})


# `${cliplab.by_precision:12,7}`: 12 where the run trains in bf16 (or fp16), 7 where in fp32.
OmegaConf.register_new_resolver("cliplab.by_precision", _epochs_for_precision, replace=True)
