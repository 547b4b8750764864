"""Build a cliplab CLIP from a named-model config (`conf/model/<name>.yaml`, or `cfg.model`)."""

import inspect

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf


def build_clip(model_cfg: DictConfig | dict):
    """Instantiate the towers, then the model class with the arguments it accepts.

    Named models also carry values shared with the towers and data (`image_size`, `context_length`);
    these are consumed through interpolation, so they are dropped here if the model class does not take them.
    """
    cfg = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(model_cfg)
    image_tower = instantiate(cfg.image_tower, _convert_="object")
    text_tower = instantiate(cfg.text_tower, _convert_="object")
    cls = get_class(cfg._target_)
    accepted = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    skip = {"_target_", "image_tower", "text_tower"}
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in skip}
    kwargs = {k: v for k, v in kwargs.items() if takes_any or k in accepted}
    return cls(image_tower=image_tower, text_tower=text_tower, **kwargs)
