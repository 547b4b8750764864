"""A CLIP and its tokenizer from a named-model config (`conf/model/<name>.yaml`, `cfg.model`, or the
`model` of a checkpoint's hyperparameters or a saved `config.yaml`).

The config holds the towers and the tokenizer side by side (`image_tower`, `text_tower`, `tokenizer`);
the CLIP is built from everything but the tokenizer, the tokenizer on its own: once per run, by its one
owner (`cliplab.lit.module.CLIPModule`). Configs saved before the tokenizer moved out of the text tower
(`text_tower.tokenizer`) are read the same way (`current_layout`).
"""

import inspect

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from cliplab.models.interfaces import Tokenizer
from cliplab.utils.errors import CliplabError, ConfigError


def current_layout(model_cfg: DictConfig | dict) -> dict:
    """The model config as a plain dict, a legacy `text_tower.tokenizer` moved to `tokenizer`."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else model_cfg
    cfg = dict(cfg)
    text_tower = dict(cfg.get("text_tower") or {})
    if "tokenizer" in text_tower:
        legacy = text_tower.pop("tokenizer")
        cfg["text_tower"] = text_tower
        cfg.setdefault("tokenizer", legacy)
    return cfg


def build_clip(model_cfg: DictConfig | dict):
    """Instantiate the towers, then the model class with the arguments it accepts.

    Named models also carry values shared with the towers and data (`image_size`, `context_length`) and
    the tokenizer; these are consumed elsewhere, so they are dropped here if the model class does not take
    them.
    """
    cfg = OmegaConf.create(current_layout(model_cfg))
    image_tower = instantiate(cfg.image_tower, _convert_="object")
    text_tower = instantiate(cfg.text_tower, _convert_="object")
    cls = get_class(cfg._target_)
    accepted = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    skip = {"_target_", "image_tower", "text_tower", "tokenizer"}
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in skip}
    kwargs = {k: v for k, v in kwargs.items() if takes_any or k in accepted}
    return cls(image_tower=image_tower, text_tower=text_tower, **kwargs)


def named_model_config(name: str) -> dict:
    """`conf/model/<name>.yaml` composed as a run composes it (its towers and tokenizer), resolved: for a
    second model beside the run's own (a distillation teacher), which Hydra cannot place twice."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cliplab.utils.paths import CONF_DIR

    if not (CONF_DIR / "model" / f"{name}.yaml").is_file():
        names = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ConfigError(f"no named model {name!r}; choose one of {', '.join(names)}")
    overrides = [f"model={name}"]
    if GlobalHydra.instance().is_initialized():  # inside python src/train.py
        cfg = compose("train", overrides=overrides)
    else:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


def build_tokenizer(model_cfg: DictConfig | dict) -> Tokenizer | None:
    """The tokenizer of `model.tokenizer` (None when the config sets none); one that cannot load its
    vocabulary is a setup problem: one line."""
    node = current_layout(model_cfg).get("tokenizer")
    if not node:
        return None
    try:
        return instantiate(node)
    except CliplabError:  # already one line (e.g. a hub name offline)
        raise
    except Exception as err:
        raise ConfigError(f"cannot build the tokenizer of model.tokenizer: {err}") from err
