"""`???` values the user has not given yet: the first one, named with an example command.

The example comes from the config files' own comments (`# python src/train.py data=csv
data.train.path=/data/mine/train.csv`): the first `<key>=<value>` written there, preferring the file
of the option the run picked for the key's group.
"""

import re
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from cliplab.utils.paths import CONF_DIR


def missing_keys(cfg, prefix: str = "") -> list[str]:
    """Every key whose value is `???`, in config order (`hydra` excluded)."""
    found = []
    if isinstance(cfg, DictConfig):
        items = [(key, f"{prefix}{key}") for key in cfg if not (prefix == "" and key == "hydra")]
    elif isinstance(cfg, ListConfig):
        items = [(index, f"{prefix[:-1]}[{index}]") for index in range(len(cfg))]
    else:
        return found
    for key, name in items:
        if OmegaConf.is_missing(cfg, key):
            found.append(name)
            continue
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation():
            found.extend(missing_keys(child, f"{name}."))
    return found


def _choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except (ValueError, AttributeError):
        return {}


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, AttributeError):
        return []


def example_value(key: str, conf_dir: Path = CONF_DIR) -> str | None:
    """The value a config comment gives for `key` (`key=VALUE`), or None."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(key)}=(\S+)")
    group, _, rest = key.partition(".")
    option = _choices().get(group)
    option = rest.split(".", 1)[0] if group == "evals" else option
    preferred = [conf_dir / group / f"{option}.yaml"] if isinstance(option, str) else []
    for path in [*preferred, *sorted(conf_dir.rglob("*.yaml"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            comment = line.partition("#")[2]
            match = pattern.search(comment)
            if match:
                return match.group(1).strip("'\"")
    return None


def missing_message(key: str) -> str:
    """`data.train.path is required: python src/train.py data=csv data.train.path=/data/mine/train.csv`."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0].endswith(".py") else "train.py"
    given = [o for o in _overrides() if not o.lstrip("+~").startswith(f"{key}=")]
    example = example_value(key) or "<value>"
    return f"{key} is required: python src/{script} {' '.join([*given, f'{key}={example}'])}"
