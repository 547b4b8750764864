"""Fine-tune and WiSE-FT: `python src/finetune.py pretrained=<run dir or .ckpt> finetune.data.root=<folder>`."""

import hydra
from omegaconf import DictConfig

from cliplab.finetune.run import finetune
from cliplab.utils.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(finetune, cfg)


if __name__ == "__main__":
    main()
