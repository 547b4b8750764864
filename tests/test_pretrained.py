"""`pretrained=FILE` starts a run from open_clip-layout weights; a mismatched file is a clear error."""

import pytest
import torch

from cliplab.models.interop import export_openclip
from cliplab.pipeline import build_module, load_pretrained
from cliplab.utils.errors import CliplabError


@pytest.fixture
def exported_tiny(cfg_factory, tmp_path):
    torch.manual_seed(123)  # weights unlike a freshly seeded model's
    source = build_module(cfg_factory(["model=tiny_rn"]))  # a CLIP ResNet: open_clip's native layout
    source.configure_model()
    out = export_openclip(source.model, tmp_path / "export")
    return source.model, out / "open_clip_model.safetensors"


def test_pretrained_weights_are_loaded(cfg_factory, exported_tiny):
    source, path = exported_tiny
    cfg = cfg_factory(["model=tiny_rn", f"pretrained={path}"])
    module = build_module(cfg)
    load_pretrained(module, cfg)
    loaded = module.model.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_pretrained_for_another_architecture_is_one_clear_error(cfg_factory, exported_tiny):
    _, path = exported_tiny
    cfg = cfg_factory(["model=tiny", f"pretrained={path}"])
    with pytest.raises(CliplabError) as err:
        load_pretrained(build_module(cfg), cfg)
    assert "does not fit this model" in str(err.value) and "\n" not in str(err.value)


def test_resuming_ignores_pretrained(cfg_factory, tmp_path):
    cfg = cfg_factory(
        [f"pretrained={tmp_path / 'missing.safetensors'}", f"ckpt_path={tmp_path / 'last.ckpt'}"]
    )
    module = build_module(cfg)
    load_pretrained(module, cfg)  # the checkpoint's weights win: the pretrained file is not even opened
    assert module.model is None
