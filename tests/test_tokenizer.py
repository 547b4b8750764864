"""CLIPTokenizer must produce exactly open_clip's token ids (open_clip is the oracle here)."""

import pickle
import random

import open_clip
import pytest
import torch

from cliplab.models import bpe_vocab
from cliplab.models.tokenizer import CLIPTokenizer

CORPUS = [
    "a photo of a cat",
    "A PHOTO OF A DOG.",
    "",
    "   ",
    "\t\n  \r\n",
    "naïve café résumé Ångström Ærø façade",
    "日本語のテキストと中文字符和한국어",
    "emoji: 😀🎉👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "html &amp;amp; entities &lt;b&gt; &quot;quoted&quot; &#39;apos&#39; &nbsp;",
    "mojibake: CafÃ© donâ€™t",
    "it's they're we've I'm you'll he'd IT'S",
    "numbers 1234567890 3.14159 1,000,000 2nd 42%",
    "punctuation!!! ??? ... --- ((brackets)) [x] {y} <z> @#$^*_+=|\\/~`",
    "snake_case CamelCase kebab-case URL https://example.com/a?b=c&d=e#f",
    "<start_of_text> literal special tokens <end_of_text>",
    "Ελληνικά Русский текст עברית العربية हिन्दी ไทย",
    "combining: e\u0301 a\u0308 zero\u200bwidth soft\u00adhyphen",
    "a " * 200,
    "supercalifragilisticexpialidocious " * 30,
    " ".join(str(i) for i in range(100)),
]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcXYZ éüßçøñ 日本中文 😀🎉 0123 .,!?'\"&;<>-_ \t\n"
    alphabet += "".join(chr(c) for c in range(0x400, 0x420))  # Cyrillic
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


def test_attributes(tokenizer):
    assert tokenizer.vocab_size == 49408
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id, tokenizer.pad_token_id) == (49406, 49407, 0)
    assert tokenizer.context_length == 77


def _random_ascii(n: int, seed: int = 1) -> list[str]:
    """Plain-ASCII texts (the tokenizer's fast path) mixed with the characters that must leave it."""
    rng = random.Random(seed)
    alphabet = "abc XYZ 019 .,!?'\"-_()[]{}<>/\\`~ \t\n\r" + "&;#" + "\x0b\x0c\x1b\x7f\x00"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def test_matches_open_clip_tokenize(tokenizer):
    texts = CORPUS + _random_texts(200) + _random_ascii(300)
    ours = tokenizer(texts)
    assert ours.dtype == torch.long and ours.shape == (len(texts), 77)
    assert torch.equal(ours, open_clip.tokenize(texts))


def test_matches_open_clip_model_tokenizer_and_truncation(tokenizer):
    oracle = open_clip.get_tokenizer("ViT-B-32")
    assert torch.equal(tokenizer(CORPUS), oracle(CORPUS))
    short = CLIPTokenizer(context_length=16)
    ours = short(CORPUS)
    assert ours.shape == (len(CORPUS), 16)
    assert torch.equal(ours, open_clip.tokenize(CORPUS, context_length=16))
    assert torch.equal(tokenizer(CORPUS, context_length=16), ours)
    # Truncated rows still end with EOT, so argmax pooling finds it.
    assert (ours.argmax(dim=-1) >= 1).all() and (ours[:, -1][ours[:, -1] != 0] == 49407).all()


def test_single_string_and_empty(tokenizer):
    one = tokenizer("hello world")
    assert one.shape == (1, 77)
    assert one[0, :4].tolist() == [49406, 3306, 1002, 49407]
    assert tokenizer("")[0, :3].tolist() == [49406, 49407, 0]
    assert tokenizer(" \n\t ")[0, :3].tolist() == [49406, 49407, 0]
    assert tokenizer([]).shape == (0, 77)


def test_decode_round_trip(tokenizer):
    ids = tokenizer("a photo of a café, 😀")[0]
    assert tokenizer.decode(ids) == "<start_of_text>a photo of a café , 😀 <end_of_text>"


def test_pickle_round_trip(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert len(pickle.dumps(tokenizer)) < 10_000  # only settings travel to workers
    assert torch.equal(clone(CORPUS), tokenizer(CORPUS))


def test_vocab_cached_from_installed_open_clip(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPLAB_CACHE", str(tmp_path))
    path = bpe_vocab.bpe_vocab_path()
    assert path.is_relative_to(tmp_path)
    assert path.stat().st_size == bpe_vocab.VOCAB_SIZE_BYTES
    # A corrupt cached copy is replaced.
    path.write_bytes(b"corrupt")
    assert bpe_vocab.bpe_vocab_path().stat().st_size == bpe_vocab.VOCAB_SIZE_BYTES


def test_vocab_clear_error_when_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(bpe_vocab, "_from_installed_open_clip", lambda: None)
    monkeypatch.setattr(bpe_vocab, "_from_downloaded_wheel", lambda workdir: None)
    with pytest.raises(RuntimeError, match="cannot obtain bpe_simple_vocab_16e6.txt.gz"):
        bpe_vocab.bpe_vocab_path()


def test_vocab_from_pip_download(tmp_path, monkeypatch):
    """Fetches the vocabulary with pip download (the package index is reachable, as on CI)."""
    monkeypatch.setenv("CLIPLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(bpe_vocab, "_from_installed_open_clip", lambda: None)
    path = bpe_vocab.bpe_vocab_path()
    assert path.stat().st_size == bpe_vocab.VOCAB_SIZE_BYTES


# ---- one owner: the training module builds the run's tokenizer from `model.tokenizer` ----


def test_checkpoints_with_the_tokenizer_inside_the_text_tower_still_load(tmp_path):
    """Checkpoints and saved configs from before `model.tokenizer` carry it as `model.text_tower.tokenizer`;
    they load as before, the tokenizer moved beside the towers (the towers no longer take it)."""
    from cliplab.checkpoints.load import load_module
    from cliplab.lit.module import CLIPModule
    from cliplab.models.build import build_clip, current_layout
    from tests._tiny import LOSS, MODEL

    tokenizer_cfg = {"_target_": "cliplab.models.tokenizer.CLIPTokenizer", "context_length": 8}
    legacy = {**MODEL, "text_tower": {**MODEL["text_tower"], "tokenizer": tokenizer_cfg}}
    optim = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    torch.manual_seed(0)
    current = CLIPModule(model={**MODEL, "tokenizer": tokenizer_cfg}, loss=LOSS, optim=optim)
    current.configure_model()
    old_hparams = {**dict(current.hparams), "model": legacy}
    torch.save({"state_dict": current.state_dict(), "hyper_parameters": old_hparams}, tmp_path / "old.ckpt")

    module = load_module(tmp_path / "old.ckpt")
    assert "tokenizer" not in module.hparams.model["text_tower"]
    assert module.hparams.model["tokenizer"] == tokenizer_cfg
    assert isinstance(module.tokenizer, CLIPTokenizer) and module.tokenizer.context_length == 8
    for name, value in current.state_dict().items():
        assert torch.equal(module.state_dict()[name], value), name
    # a saved config.yaml of that time builds the same CLIP (its text tower without the tokenizer)
    assert current_layout(legacy) == {**MODEL, "tokenizer": tokenizer_cfg}
    assert set(build_clip(legacy).state_dict()) == set(current.model.state_dict())
