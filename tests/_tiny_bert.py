"""A tiny BERT for Hugging Face text-tower tests: the hub is unreachable, so the encoder is built from a
config and the tokenizer's vocabulary is written to a temporary folder."""

from pathlib import Path

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "photo",
    "of",
    "cat",
    "dog",
    "the",
    "very",
    "long",
]
VOCAB += ["caption", "##s", "na", "##ive", "cafe", ",", "."]
# The encoder's size, shared by the tiny BERT here and the tiny encoders of every family in test_interop_hf.
TINY_ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
TINY_BERT = dict(model_type="bert", vocab_size=len(VOCAB), max_position_embeddings=64, **TINY_ENCODER)


def save_tiny_bert_tokenizer(path: Path) -> Path:
    from transformers import BertTokenizer

    BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}).save_pretrained(path)
    return path


def hf_tower_overrides(tokenizer_dir: Path) -> dict:
    """`model.text_tower` keys that make any HF tower YAML the tiny BERT (its tokenizer follows)."""
    return {"model_name_or_path": str(tokenizer_dir), "config": dict(TINY_BERT)}
