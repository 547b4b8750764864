"""Text towers around Hugging Face encoders (BERT, RoBERTa, XLM-R, ...), with open_clip's `text.*` layout.

`transformer` is the AutoModel and `proj` maps its pooled output to the joint embedding, as in open_clip's
HFTextEncoder, so checkpoints trained there load here. Weights come from a local directory (or the hub
cache when online); `config` builds an untrained model from scratch instead, which needs no files at all.
"""

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from cliplab.models.hf_hub import from_pretrained
from cliplab.models.interfaces import TextTower, Tokenizer

# The key users set; the tokenizer config reads the same folder by interpolation.
NAME_KEY = "model.text_tower.model_name_or_path"

# cliplab's names; the semantics are open_clip's (`open_clip/hf_model.py`), whose names are accepted too.
POOLERS = ("mean", "max", "cls", "cls_last_hidden_state", "last")
OPENCLIP_POOLER_NAMES = {
    "mean_pooler": "mean",
    "max_pooler": "max",
    "cls_pooler": "cls",
    "cls_last_hidden_state_pooler": "cls_last_hidden_state",
}
PROJECTIONS = ("linear", "mlp", "none")


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer behind the cliplab tokenizer contract: `tok(texts) -> LongTensor[N, L]`."""

    eot_token_id = None  # HF towers pool with the attention mask, not at an end-of-text token

    def __init__(self, name_or_path: str, context_length: int = 77):
        self.name_or_path = str(name_or_path)
        self.context_length = int(context_length)
        self._load()

    def _load(self) -> None:
        load = AutoTokenizer.from_pretrained
        self.tokenizer = from_pretrained(load, NAME_KEY, self.name_or_path, "tokenizer_config.json")
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


def _build_encoder(
    model_name_or_path: str | None, config: dict | None, pretrained: bool, with_pooler: bool
) -> nn.Module:
    # The encoder's own pooler (BERT's dense + tanh) exists only for `cls` pooling, which returns it as
    # open_clip's `cls_pooler` does; otherwise it would be an unused parameter under DDP.
    extra = {"add_pooling_layer": with_pooler}
    if config is not None:
        settings = dict(config)
        hf_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        build = lambda **kw: AutoModel.from_config(hf_config, **kw)
    elif model_name_or_path is None:
        raise ValueError("HFTextTower needs model_name_or_path or config")
    elif pretrained:
        build = lambda **kw: from_pretrained(AutoModel.from_pretrained, NAME_KEY, model_name_or_path, **kw)
    else:
        hf_config = from_pretrained(AutoConfig.from_pretrained, NAME_KEY, model_name_or_path)
        build = lambda **kw: AutoModel.from_config(hf_config, **kw)
    try:
        model = build(**extra)
    except TypeError:  # encoders without a pooling layer do not take the argument
        model = build()
    # Encoder-decoder models (T5, mT5) contribute their encoder only, as in open_clip.
    return model.encoder if getattr(model.config, "is_encoder_decoder", False) else model


def _find_layers(model: nn.Module, count: int) -> nn.ModuleList:
    """The encoder's block list: the first ModuleList with one entry per hidden layer."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the {count} encoder layers of {type(model).__name__}")


class HFTextTower(nn.Module, TextTower):
    """`forward(tokens [B, L]) -> [B, output_dim]`; padding (the model's `pad_token_id`) is masked out.

    Poolers, as open_clip's HFTextEncoder computes them (its names, e.g. `cls_pooler`, work too): `mean`
    over non-padding tokens; `max` over non-padding tokens (open_clip's `max_pooler` cannot run: it calls
    `masked_fill` with an integer mask); `cls`: the encoder's pooler output (BERT's dense + tanh over the
    first token) where the architecture has a pooler, else the first token's last hidden state;
    `cls_last_hidden_state`: the first token's last hidden state; `last` (cliplab only, for decoder-style
    models): the last non-padding token.
    Projections: `linear` (no bias), `mlp` (hidden (d + E) / 2, GELU), `none` (output_dim = hidden size;
    open_clip's `hf_proj_type: null` with hidden size = embed_dim).
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
        pooler = OPENCLIP_POOLER_NAMES.get(pooler, pooler)
        if pooler not in POOLERS:
            expected = (*POOLERS, *OPENCLIP_POOLER_NAMES)
            raise ValueError(f"unknown pooler {pooler!r}; expected one of {expected}")
        if proj not in PROJECTIONS:
            raise ValueError(f"unknown proj {proj!r}; expected one of {PROJECTIONS}")
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        self.transformer = _build_encoder(model_name_or_path, config, pretrained, with_pooler=pooler == "cls")
        hf_config = self.transformer.config
        width = hf_config.hidden_size
        self.pad_token_id = hf_config.pad_token_id if hf_config.pad_token_id is not None else 0
        self.pooler, self.proj_type = pooler, proj
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

    def pool(self, output, mask: torch.Tensor) -> torch.Tensor:
        """The pooled feature of the encoder's `output` (its `last_hidden_state`, `pooler_output`)."""
        hidden = output.last_hidden_state
        if self.pooler == "cls" and getattr(output, "pooler_output", None) is not None:
            return output.pooler_output
        if self.pooler in ("cls", "cls_last_hidden_state"):
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
        output = self.transformer(input_ids=tokens, attention_mask=mask.long())
        return self.proj(self.pool(output, mask))

    # ---- tower contract (docs/contracts.md) ----

    def lock(self, unlocked_groups: int = 0, freeze_norm_stats: bool = False) -> None:
        """Freeze all but the last `unlocked_groups` groups: embeddings (and any other encoder parameters
        before the blocks), each encoder block, the head (the encoder's pooler, used by `cls`, and the
        projection). `freeze_norm_stats` is accepted for the common contract; LayerNorm keeps no running
        statistics."""
        layers = self._layers[0]
        pooler = getattr(self.transformer, "pooler", None)
        head = [*(pooler.parameters() if pooler is not None else []), *self.proj.parameters()]
        later = {id(p) for p in [*layers.parameters(), *head]}
        groups = [
            [p for p in self.transformer.parameters() if id(p) not in later],
            *[list(layer.parameters()) for layer in layers],
            head,
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
