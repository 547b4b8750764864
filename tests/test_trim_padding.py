"""Batches trimmed to their longest caption give the same features, loss and gradients as full-context ones."""

import torch

from cliplab.data.samples import Collate, trim_padding
from cliplab.data.transforms import eval_transform
from cliplab.models.text_tower import CLIPTextTower
from cliplab.models.tokenizer import CLIPTokenizer
from tests.helpers.numerics import assert_close_reordered


def test_trim_drops_only_columns_that_are_padding_everywhere():
    tokens = torch.zeros(3, 32, dtype=torch.long)
    tokens[0, :5] = 7
    tokens[1, :11] = 7
    assert trim_padding(tokens, 0).shape == (3, 16)  # longest caption 11, rounded up to 16
    assert trim_padding(tokens, 0, multiple=1).shape == (3, 11)
    assert torch.equal(trim_padding(tokens, 0, multiple=1), tokens[:, :11])
    tokens[2, -1] = 7  # a full-length row: nothing can go
    assert trim_padding(tokens, 0).shape == (3, 32)
    assert trim_padding(tokens, None) is tokens  # a tokenizer without a pad id is left alone


def test_collate_trims_tokenized_captions():
    import numpy as np

    tokenizer = CLIPTokenizer(77)
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    batch = [(image, "a dog"), (image, "a photo of a small red dog on the beach")]
    _, trimmed = Collate(eval_transform(32), tokenizer, trim_padding=True)(batch)
    _, full = Collate(eval_transform(32), tokenizer)(batch)
    assert full.shape == (2, 77) and trimmed.shape == (2, 16)
    assert torch.equal(trimmed, full[:, :16])


def test_clip_text_tower_features_and_gradients_do_not_change():
    torch.manual_seed(0)
    tower = CLIPTextTower(32, width=64, heads=4, layers=2, vocab_size=100, context_length=32)
    tokens = torch.zeros(6, 32, dtype=torch.long)
    for row, length in enumerate([3, 5, 9, 4, 12, 7]):
        tokens[row, :length] = torch.randint(1, 98, (length,))
        tokens[row, length - 1] = 99  # end of text: the largest id
    grads = []
    for batch in (tokens, trim_padding(tokens, 0)):
        tower.zero_grad()
        features = tower(batch)
        features.square().sum().backward()
        grads.append((features.detach(), {n: p.grad.clone() for n, p in tower.named_parameters()}))
    (full, full_grads), (short, short_grads) = grads
    assert trim_padding(tokens, 0).shape[1] == 16
    assert_close_reordered(short, full, rtol=1e-5)
    for name, grad in full_grads.items():
        assert_close_reordered(short_grads[name], grad, msg=name)


def test_hf_text_tower_features_do_not_change():
    from tests.test_text_towers import _hf_tower

    for pooler in ("mean", "cls", "cls_last_hidden_state", "max", "last"):
        tower = _hf_tower(pooler=pooler)
        tokens = torch.zeros(3, 32, dtype=torch.long)  # BERT pads with 0
        for row, length in enumerate([4, 9, 6]):
            tokens[row, :length] = torch.randint(5, 20, (length,))
        with torch.no_grad():
            torch.testing.assert_close(tower(trim_padding(tokens, 0)), tower(tokens), rtol=1e-5, atol=1e-6)
