"""Evaluate a checkpoint: `python src/eval.py ckpt_path=last.ckpt evals=[emoji,fashion_mnist]` (conf/eval.yaml)."""

import hydra
from omegaconf import DictConfig

from cliplab.eval.run import evaluate
from cliplab.utils.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    return exit_on_user_error(evaluate, cfg)


if __name__ == "__main__":
    main()
