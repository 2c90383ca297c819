"""Captions to token ids outside the model graph, exactly as the artifact's Keras
``TextVectorization`` layer does it.

Converted runtimes (OpenVINO) cannot run string operations, so a caption model is
converted from the layer *after* the vectoriser and its captions are tokenised here,
with the vocabulary stored beside the converted model. Pure Python and numpy: a worker
running the converted model never imports TensorFlow.

What the Keras layer does (``standardize="lower_and_strip_punctuation"``,
``split="whitespace"``, ``output_mode="int"``), rule by rule, and why each rule here is
written the way it is (tests/test_tokenizer.py compares the two on odd text):

1. ``tf.strings.lower``: lower-cases **ASCII letters only** ("ÉCOLE" becomes "École"),
   so ``str.lower`` (which knows Unicode) would give other tokens.
2. ``tf.strings.regex_replace`` with the pattern below: deletes ASCII punctuation.
3. ``tf.strings.split``: splits on runs of ASCII whitespace only (a no-break space or
   an ideographic space stays inside a token), dropping empty tokens.
4. Look-up: index 0 is padding, 1 the out-of-vocabulary token; then the sequence is cut
   or padded with 0 to the fixed length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: The Keras layer's own punctuation pattern (keras TextVectorization), verbatim.
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
_WHITESPACE = re.compile(r"[ \t\n\r\v\f]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

#: The only vectoriser settings this module reproduces; others are refused at conversion.
SUPPORTED = {
    "standardize": "lower_and_strip_punctuation",
    "split": "whitespace",
    "output_mode": "int",
    "ngrams": None,
}
PAD_ID = 0
OOV_ID = 1


def standardize(text: str) -> str:
    """ASCII lower-case, then ASCII punctuation removed (rules 1 and 2)."""
    return PUNCTUATION.sub("", text.translate(_ASCII_LOWER))


def split(text: str) -> list[str]:
    """Tokens separated by ASCII whitespace (rule 3)."""
    return [t for t in _WHITESPACE.split(text) if t]


@dataclass
class CaptionTokenizer:
    """The vocabulary (index 0 padding, 1 out-of-vocabulary) and the sequence length."""

    vocabulary: list[str]
    sequence_length: int
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {self.sequence_length}")
        if len(self.vocabulary) < 2 or self.vocabulary[PAD_ID] != "":
            raise ValueError("vocabulary must start with the padding token '' and the OOV token")
        # Later duplicates never win: the layer's lookup table keeps the first index.
        self._index = {}
        for i, token in enumerate(self.vocabulary):
            self._index.setdefault(token, i)

    def encode_one(self, text: str | None) -> list[int]:
        """The ids of one caption (None or empty: all padding)."""
        tokens = split(standardize(text or ""))[: self.sequence_length]
        ids = [self._index.get(t, OOV_ID) for t in tokens]
        return ids + [PAD_ID] * (self.sequence_length - len(ids))

    def encode(self, texts: Sequence[str | None]) -> np.ndarray:
        """int64 ids, shape (len(texts), sequence_length)."""
        out = np.zeros((len(texts), self.sequence_length), dtype=np.int64)
        for row, text in enumerate(texts):
            out[row] = self.encode_one(text)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"vocabulary": self.vocabulary, "sequence_length": self.sequence_length}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CaptionTokenizer:
        vocabulary = data.get("vocabulary")
        length = data.get("sequence_length")
        if not isinstance(vocabulary, list) or not all(isinstance(v, str) for v in vocabulary):
            raise ValueError("tokenizer: 'vocabulary' must be a list of strings")
        if not isinstance(length, int) or isinstance(length, bool):
            raise ValueError("tokenizer: 'sequence_length' must be an integer")
        return cls(vocabulary=list(vocabulary), sequence_length=length)
