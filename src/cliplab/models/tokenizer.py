"""OpenAI CLIP's byte-level BPE tokenizer (49,408 tokens), token-for-token identical to open_clip's default.

Text is cleaned (ftfy, HTML entities unescaped twice, whitespace collapsed, lower-cased), split by the
CLIP regex, each piece mapped from UTF-8 bytes to printable characters and merged by BPE rank. A sequence
is `<start_of_text> tokens <end_of_text>` padded with 0; over-long sequences are cut to `context_length`
with the last slot forced back to `<end_of_text>`, because the text tower pools at that token.
"""

import gzip
import html
from functools import lru_cache
from pathlib import Path

import ftfy
import regex
import torch

from cliplab.models.bpe_vocab import bpe_vocab_path
from cliplab.models.interfaces import Tokenizer

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
# The merges file holds more lines than CLIP uses; 49152 - 256 - 2 merges give a 49,408-token vocabulary.
NUM_MERGES = 49152 - 256 - 2
# Contractions, letter runs, single digits, punctuation runs; special tokens first so they stay whole.
_SPLIT_PATTERN = rf"{SOT_TOKEN}|{EOT_TOKEN}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+"
# Per-word BPE results are memoised; the cap keeps a worker's memory bounded on web-scale captions.
_MAX_CACHE_ENTRIES = 200_000


@lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """Map every byte to a printable character: printable Latin-1 bytes keep their own character,
    the other 68 bytes take code points from 256 upwards (so no piece contains whitespace or controls)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# Printable ASCII plus tab/newline/CR, without "&": ftfy and HTML unescaping leave such text unchanged
# (up to whitespace, which is collapsed anyway), and skipping them halves the time on typical captions.
_PLAIN_ASCII = regex.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")


def clean_text(text: str) -> str:
    """open_clip's default ("lower") cleaning."""
    if not _PLAIN_ASCII.fullmatch(text):
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


class CLIPTokenizer(Tokenizer):
    """Callable tokenizer: `tokenizer(texts) -> LongTensor[N, context_length]`."""

    pad_token_id = 0

    def __init__(self, context_length: int = 77, bpe_path: str | Path | None = None):
        self.context_length = int(context_length)
        self.bpe_path = str(bpe_path if bpe_path is not None else bpe_vocab_path())
        self._load()

    def _load(self) -> None:
        with gzip.open(self.bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        base = list(byte_to_char().values())
        vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self._encoder = {tok: i for i, tok in enumerate(vocab)}
        self._decoder = vocab
        self._ranks = {m: i for i, m in enumerate(merges)}
        self._byte_table = byte_to_char()
        self._char_to_byte = {c: b for b, c in self._byte_table.items()}
        self._pattern = regex.compile(_SPLIT_PATTERN, regex.IGNORECASE)
        self.vocab_size = len(vocab)
        self.sot_token_id = self._encoder[SOT_TOKEN]
        self.eot_token_id = self._encoder[EOT_TOKEN]
        self._cache: dict[str, tuple[int, ...]] = {}

    # Only the settings travel to data-loader workers; each rebuilds its tables (a fraction of a second).
    def __getstate__(self) -> dict:
        return {"context_length": self.context_length, "bpe_path": self.bpe_path}

    def __setstate__(self, state: dict) -> None:
        self.context_length = state["context_length"]
        self.bpe_path = state["bpe_path"]
        self._load()

    def _bpe(self, piece: str) -> tuple[int, ...]:
        """Token ids of one regex piece: map its UTF-8 bytes to characters, then merge the lowest-ranked
        adjacent pair until none applies. Memoised per piece."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        table = self._byte_table
        mapped = "".join(table[b] for b in piece.encode("utf-8"))
        if piece in (SOT_TOKEN, EOT_TOKEN):
            ids = (self._encoder[piece],)
        else:
            symbols = [*mapped[:-1], mapped[-1] + "</w>"]
            ranks = self._ranks
            while len(symbols) > 1:
                best_rank, best = None, None
                for pair in zip(symbols, symbols[1:]):
                    rank = ranks.get(pair)
                    if rank is not None and (best_rank is None or rank < best_rank):
                        best_rank, best = rank, pair
                if best is None:
                    break
                first, second = best
                merged, i, n = [], 0, len(symbols)
                while i < n:
                    if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
                        merged.append(first + second)
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
            ids = tuple(self._encoder[s] for s in symbols)
        if len(self._cache) >= _MAX_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without start/end tokens."""
        ids: list[int] = []
        for piece in self._pattern.findall(clean_text(text)):
            ids.extend(self._bpe(piece))
        return ids

    def decode(self, ids) -> str:
        """Text of token ids (special tokens kept, padding dropped); word ends become spaces."""
        data = bytearray()
        for i in ids:
            if int(i) == self.pad_token_id:
                continue
            token = self._decoder[int(i)]
            word_end = token.endswith("</w>")
            data.extend(self._char_to_byte[c] for c in token.removesuffix("</w>"))
            if word_end:
                data.extend(b" ")
        return data.decode("utf-8", errors="replace")

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        length = int(context_length or self.context_length)
        rows = []
        for text in texts:
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            rows.append(ids + [self.pad_token_id] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)

    def __repr__(self) -> str:
        return f"CLIPTokenizer(context_length={self.context_length}, vocab_size={self.vocab_size})"
