"""Write a cliplab CLIP (CLIP ViT image tower + CLIP text tower) as a Hugging Face `CLIPModel` directory.

`transformers.CLIPModel.from_pretrained(<dir>)` loads it, and with the tokenizer and image-processor files
written beside it (`hf_processor`) so do `CLIPProcessor` and `pipeline("zero-shot-image-classification")`.
HF's CLIP pools the class token of a ViT and the first end-of-text token of the CLIP text transformer,
and has no `logit_bias`: mean-pooled ViTs, ResNet and other timm towers, Hugging Face text towers and
sigmoid-loss models are refused with one line saying why (open_clip's layout takes most of them).
"""

import re
from pathlib import Path

import torch
from torch import nn

from cliplab.models.interop.hf_processor import save_clip_image_processor, save_clip_tokenizer
from cliplab.models.interop.openclip_export import OPENAI_MEAN, OPENAI_STD, to_openclip_state_dict
from cliplab.models.interop.openclip_towers import ExportError, clip_text_cfg, is_hf_text_tower, vision_cfg
from cliplab.models.interop.visual_keys import tower_kind, vit_pooling

_BLOCK_RENAMES = [
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
    (r"\.attn\.out_proj\.", ".self_attn.out_proj."),
]


def _blocks(state: dict, src: str, dst: str) -> dict:
    """OpenAI residual blocks under `src` -> HF encoder layers under `dst` (q/k/v split from in_proj)."""
    out = {}
    for key, value in state.items():
        m = re.match(rf"^{re.escape(src)}(\d+)(\..+)$", key)
        if not m:
            continue
        index, rest = m[1], m[2]
        if rest.startswith(".attn.in_proj_"):
            kind = rest.rsplit("_", 1)[-1]  # weight | bias
            for name, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{dst}{index}.self_attn.{name}_proj.{kind}"] = chunk.clone()
            continue
        for pattern, repl in _BLOCK_RENAMES:
            rest = re.sub(pattern, repl, rest)
        out[f"{dst}{index}{rest}"] = value
    return out


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    s = to_openclip_state_dict(model)
    out = {
        "text_model.embeddings.token_embedding.weight": s["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": s["positional_embedding"],
        "text_model.final_layer_norm.weight": s["ln_final.weight"],
        "text_model.final_layer_norm.bias": s["ln_final.bias"],
        "text_projection.weight": s["text_projection"].t().contiguous(),
        "vision_model.embeddings.patch_embedding.weight": s["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": s["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": s["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": s["visual.ln_pre.weight"],  # sic: HF's spelling
        "vision_model.pre_layrnorm.bias": s["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": s["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": s["visual.ln_post.bias"],
        "visual_projection.weight": s["visual.proj"].t().contiguous(),
        "logit_scale": s["logit_scale"],
    }
    out.update(_blocks(s, "transformer.resblocks.", "text_model.encoder.layers."))
    out.update(_blocks(s, "visual.transformer.resblocks.", "vision_model.encoder.layers."))
    return out


def hf_clip_refusal(model: nn.Module) -> str | None:
    """Why HF's CLIPModel cannot express `model` (one line, naming the way out), or None."""
    kind = tower_kind(model.visual)
    if kind != "vit":
        what = "a CLIP ResNet" if kind == "rn" else f"{getattr(model.visual, 'model_name', 'another')} tower"
        return f"HF CLIPModel has only CLIP-layout ViT image towers, this is {what}: export it to open_clip"
    if vit_pooling(model.visual)[0] != "tok":
        return "HF CLIPModel pools a ViT's class token, this one the mean of its patch tokens: export it to open_clip"
    if is_hf_text_tower(model.text):
        return "HF CLIPModel's text model is the CLIP transformer, not a Hugging Face encoder: export it to open_clip"
    if getattr(model, "logit_bias", None) is not None:
        return (
            "HF CLIPModel has no logit_bias (sigmoid-loss models map to SiglipModel): export it to open_clip"
        )
    return None


def hf_clip_config(model: nn.Module):
    from transformers import CLIPConfig

    refusal = hf_clip_refusal(model)
    if refusal:
        raise ExportError(refusal)
    vcfg, v_quick = vision_cfg(model.visual)
    tcfg, t_quick = clip_text_cfg(model.text)
    text_config = dict(
        vocab_size=tcfg["vocab_size"],
        hidden_size=tcfg["width"],
        intermediate_size=int(tcfg["width"] * tcfg["mlp_ratio"]),
        num_hidden_layers=tcfg["layers"],
        num_attention_heads=tcfg["heads"],
        max_position_embeddings=tcfg["context_length"],
        hidden_act="quick_gelu" if t_quick else "gelu",
        layer_norm_eps=1e-5,
        projection_dim=model.embed_dim,
        # EOT pooling: the first 49407 equals argmax(ids) for OpenAI's vocabulary (EOT is the largest id).
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )
    vision_config = dict(
        hidden_size=vcfg["width"],
        intermediate_size=int(vcfg["width"] * vcfg["mlp_ratio"]),
        num_hidden_layers=vcfg["layers"],
        num_attention_heads=vcfg["width"] // vcfg["head_width"],
        image_size=vcfg["image_size"],
        patch_size=vcfg["patch_size"],
        hidden_act="quick_gelu" if v_quick else "gelu",
        layer_norm_eps=1e-5,
        projection_dim=model.embed_dim,
    )
    return CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=model.embed_dim,
        logit_scale_init_value=float(model.logit_scale.detach()),
    )


def export_hf_clip(model: nn.Module, out_dir: str | Path, mean=OPENAI_MEAN, std=OPENAI_STD) -> Path:
    """Save as a `CLIPModel` directory: config.json + model.safetensors, the tokenizer files and
    preprocessor_config.json (the model's image size, `mean` / `std`); returns the dir. Raises
    `ExportError` (one line) for models CLIPModel cannot express."""
    from transformers import CLIPModel

    hf = CLIPModel(hf_clip_config(model))
    result = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    # Only HF's own non-weight buffers (position ids) may be absent from the converted weights.
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"HF conversion mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    out = Path(out_dir)
    hf.save_pretrained(out)
    save_clip_tokenizer(out, context_length=model.text.context_length)
    save_clip_image_processor(out, hf.config.vision_config.image_size, mean, std)
    return out
