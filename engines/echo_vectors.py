"""The echo engine's tokenizer vocabulary and embedding: deterministic, no model, same in every process."""

from __future__ import annotations

import functools
import math
import random
import threading
import zlib
from collections.abc import Iterable

# Words remembered for detokenizing; past this, new words still get ids but cannot be read back.
MAX_REMEMBERED_WORDS = 1 << 16


def word_id(word: str) -> int:
    """A word's token id: a CRC-32 of its UTF-8, so every process gives a word the same id."""
    return zlib.crc32(word.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF


class EchoVocabulary:
    """Ids for words, and the words behind the ids this engine has given out."""

    def __init__(self) -> None:
        self._words: dict[int, str] = {}
        self._lock = threading.Lock()

    def ids(self, words: Iterable[str]) -> list[int]:
        """Each word's id, remembering the word for `text`."""
        ids = []
        for word in words:
            token = word_id(word)
            if token not in self._words and len(self._words) < MAX_REMEMBERED_WORDS:
                with self._lock:
                    self._words[token] = word
            ids.append(token)
        return ids

    def text(self, ids: Iterable[int]) -> str:
        """The words behind `ids`; KeyError names the first id never given out."""
        return "".join(self._words[token] for token in ids)


@functools.lru_cache(maxsize=4096)
def _word_vector(token: int, size: int) -> tuple[float, ...]:
    rng = random.Random(token)
    return tuple(rng.gauss(0.0, 1.0) for _ in range(size))


def bag_of_words_vector(ids: Iterable[int], size: int) -> tuple[float, ...]:
    """The unit-length sum of one pseudo-random vector per token: texts sharing words lie closer."""
    total = [0.0] * size
    for token in ids:
        for i, value in enumerate(_word_vector(token, size)):
            total[i] += value
    norm = math.sqrt(sum(value * value for value in total)) or 1.0
    return tuple(value / norm for value in total)
