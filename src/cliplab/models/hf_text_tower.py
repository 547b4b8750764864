"""Text towers around Hugging Face encoders (BERT, RoBERTa, XLM-R, ...), with open_clip's `text.*` layout.

`transformer` is the AutoModel and `proj` maps its pooled output to the joint embedding, as in open_clip's
HFTextEncoder, so checkpoints trained there load here. Weights come from a local directory (or the hub
cache when online); `config` builds an untrained model from scratch instead, which needs no files at all.
"""

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from cliplab.models.interfaces import TextTower, Tokenizer

POOLERS = ("mean", "cls", "max", "last")
PROJECTIONS = ("linear", "mlp", "none")


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer behind the cliplab tokenizer contract: `tok(texts) -> LongTensor[N, L]`."""

    eot_token_id = None  # HF towers pool with the attention mask, not at an end-of-text token

    def __init__(self, name_or_path: str, context_length: int = 77):
        self.name_or_path = str(name_or_path)
        self.context_length = int(context_length)
        self._load()

    def _load(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.vocab_size = len(self.tokenizer)

    # Workers reload from the files instead of receiving the pickled backend.
    def __getstate__(self) -> dict:
        return {"name_or_path": self.name_or_path, "context_length": self.context_length}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        length = int(context_length or self.context_length)
        texts = [" ".join(text.split()) for text in texts]  # collapse whitespace like the CLIP tokenizer
        if not texts:
            return torch.zeros(0, length, dtype=torch.long)
        encoded = self.tokenizer(
            texts, max_length=length, padding="max_length", truncation=True, return_tensors="pt"
        )
        return encoded["input_ids"].long()

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name_or_path!r}, context_length={self.context_length})"


def _build_encoder(model_name_or_path: str | None, config: dict | None, pretrained: bool) -> nn.Module:
    # The encoder's own pooler (BERT's dense + tanh) is never used; dropping it keeps DDP free of
    # unused parameters.
    extra = {"add_pooling_layer": False}
    if config is not None:
        settings = dict(config)
        hf_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        build = lambda **kw: AutoModel.from_config(hf_config, **kw)
    elif model_name_or_path is None:
        raise ValueError("HFTextTower needs model_name_or_path or config")
    elif pretrained:
        build = lambda **kw: AutoModel.from_pretrained(model_name_or_path, **kw)
    else:
        hf_config = AutoConfig.from_pretrained(model_name_or_path)
        build = lambda **kw: AutoModel.from_config(hf_config, **kw)
    try:
        return build(**extra)
    except TypeError:  # encoders without a pooling layer do not take the argument
        return build()


def _find_layers(model: nn.Module, count: int) -> nn.ModuleList:
    """The encoder's block list: the first ModuleList with one entry per hidden layer."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the {count} encoder layers of {type(model).__name__}")


class HFTextTower(nn.Module, TextTower):
    """`forward(tokens [B, L]) -> [B, output_dim]`; padding (the model's `pad_token_id`) is masked out.

    Poolers: `mean` over non-padding tokens, `cls` (first token's last hidden state, no extra pooler
    layer), `max` over non-padding tokens, `last` (last non-padding token, for decoder-style models).
    Projections: `linear` (no bias), `mlp` (hidden (d + E) / 2, GELU), `none` (output_dim = hidden size).
    """

    def __init__(
        self,
        embed_dim: int,
        model_name_or_path: str | None = None,
        config: dict | None = None,
        pooler: str = "mean",
        proj: str = "linear",
        pretrained: bool = True,
        grad_checkpointing: bool = False,
        context_length: int | None = None,  # compared with the tokenizer's (validate); unused here
    ):
        super().__init__()
        if pooler not in POOLERS:
            raise ValueError(f"unknown pooler {pooler!r}; expected one of {POOLERS}")
        if proj not in PROJECTIONS:
            raise ValueError(f"unknown proj {proj!r}; expected one of {PROJECTIONS}")
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        self.transformer = _build_encoder(model_name_or_path, config, pretrained)
        hf_config = self.transformer.config
        width = hf_config.hidden_size
        self.pad_token_id = hf_config.pad_token_id if hf_config.pad_token_id is not None else 0
        self.pooler = pooler
        if proj == "linear":
            self.proj = nn.Linear(width, embed_dim, bias=False)
        elif proj == "mlp":
            hidden = (width + embed_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False)
            )
        else:
            self.proj = nn.Identity()
        self.output_dim = embed_dim if proj != "none" else width
        self._layers = [_find_layers(self.transformer, hf_config.num_hidden_layers)]  # list: not a submodule
        self.set_grad_checkpointing(grad_checkpointing)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooler == "cls":
            return hidden[:, 0]
        if self.pooler == "last":
            last = mask.long().cumsum(dim=1).argmax(dim=1)  # index of the last non-padding token
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        keep = mask.unsqueeze(-1)
        if self.pooler == "max":
            return hidden.masked_fill(~keep, torch.finfo(hidden.dtype).min).max(dim=1).values
        return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = tokens != self.pad_token_id
        hidden = self.transformer(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return self.proj(self.pool(hidden, mask))

    # ---- tower contract (docs/contracts.md) ----

    def lock(self, unlocked_groups: int = 0, freeze_norm_stats: bool = False) -> None:
        """Freeze all but the last `unlocked_groups` groups: embeddings (and any other encoder parameters
        outside the blocks), each encoder block, the projection. `freeze_norm_stats` is accepted for the
        common contract; LayerNorm keeps no running statistics."""
        layers = self._layers[0]
        in_layers = {id(p) for p in layers.parameters()}
        groups = [
            [p for p in self.transformer.parameters() if id(p) not in in_layers],
            *[list(layer.parameters()) for layer in layers],
            list(self.proj.parameters()),
        ]
        for index, params in enumerate(groups):
            trainable = unlocked_groups > 0 and index >= len(groups) - unlocked_groups
            for param in params:
                param.requires_grad_(trainable)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        model = self.transformer
        if not model.supports_gradient_checkpointing:
            return
        kwargs = {"use_reentrant": False}
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_* (old names warn).
        if hasattr(model, "activation_checkpointing_enable"):
            if enable:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.activation_checkpointing_disable()
        elif enable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_disable()

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "position_embeddings" in name}

    def block_classes(self) -> tuple[type, ...]:
        return (type(self._layers[0][0]),)
