"""Reading and writing CLIP checkpoints in other libraries' formats (OpenAI, open_clip, Hugging Face).

- `load_openclip_state_dict(model, state)` / `load_openclip_checkpoint(model, path)`: OpenAI or open_clip
  weights (flat or CustomTextCLIP layout, training checkpoints, DDP prefixes) into a cliplab CLIP.
- `export_openclip(model, out_dir)`: `open_clip_config.json` + `open_clip_model.safetensors`.
- `export_hf_clip(model, out_dir)`: a `transformers.CLIPModel` directory (ViT image + CLIP text towers).
- `build_clip(model_cfg)`: a cliplab CLIP from a named-model config (`cliplab.models.build`).
"""

from cliplab.models.build import build_clip
from cliplab.models.interop.hf_export import export_hf_clip
from cliplab.models.interop.openclip_export import export_openclip
from cliplab.models.interop.openclip_load import load_openclip_checkpoint, load_openclip_state_dict

__all__ = [
    "build_clip",
    "export_hf_clip",
    "export_openclip",
    "load_openclip_checkpoint",
    "load_openclip_state_dict",
]
