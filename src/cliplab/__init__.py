"""cliplab: train CLIP models with PyTorch Lightning and Hydra."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${cliplab.cwd:}` in configs: the launch directory, resolvable everywhere, also where `${hydra:...}`
# is not (a multirun sweeper resolves hydra.sweep.dir before any job exists).
OmegaConf.register_new_resolver("cliplab.cwd", os.getcwd, replace=True)


def _by_precision(half_precision_value, fp32_value, *, _root_):
    # imported on first use: `import cliplab` stays free of torch
    from cliplab.utils.host_precision import value_for_precision

    return value_for_precision(half_precision_value, fp32_value, _root_.get("trainer") or {})


# `${cliplab.by_precision:14,7}`: 14 where the run trains in bf16 (or fp16), 7 where in fp32 (the default
# run's epochs and batch: conf/trainer/cpu.yaml, conf/data/mix.yaml).
OmegaConf.register_new_resolver("cliplab.by_precision", _by_precision, replace=True)
