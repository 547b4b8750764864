"""Train a CLIP model: `python src/train.py model=vit_b32 data=laion trainer=ddp`."""

import hydra
from omegaconf import DictConfig

from cliplab.pipeline import train
from cliplab.utils.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = exit_on_user_error(train, cfg)
    # Returned for Hydra sweepers that optimise a metric.
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
