"""Train a CLIP model: `python src/train.py model=vit_b32 data=laion trainer=ddp`."""

import hydra
from omegaconf import DictConfig

from cliplab.pipeline import train
from cliplab.sweeps.jobs import is_multirun
from cliplab.utils.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # In a multirun, a user error fails only its job (Hydra records it and runs the others; see
    # cliplab.sweeps.hydra_callback) instead of exiting the whole sweep.
    metrics = train(cfg) if is_multirun() else exit_on_user_error(train, cfg)
    # Returned for Hydra sweepers that optimise a metric.
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
