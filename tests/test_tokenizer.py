"""Caption tokenising outside the graph (tagger/tokenizer.py) gives the same ids as the
artifact's own Keras TextVectorization layer, on ordinary and odd text."""

from __future__ import annotations

import numpy as np
import pytest

from tagger.tokenizer import OOV_ID, PAD_ID, CaptionTokenizer, split, standardize

VOCAB_TEXTS = [
    "the lady wears a red dress",
    "the gentleman wears blue denim shorts",
    "école straße naïve café",
    "t-shirt don't 100% cotton",
    "\uff21\uff22\uff23 full width",
]
ODD = [
    "",
    None,
    "   ",
    "The Lady Wears A RED Dress.",
    "!!!,,,...",
    "don't-stop.now",
    "ÉCOLE Straße İstanbul Café",  # only ASCII letters are lower-cased by the layer
    "naïve café",
    "a\u00a0b no-break space stays inside a token",
    "ideographic\u3000space and\u2003em space",
    "tabs\tnew\nlines\rand\x0bvertical\x0cfeed",
    "zero\u200bwidth joiner",
    "\uff21\uff22\uff23 full width",
    "emoji 👗 dress 👗",
    "[UNK] is not the out-of-vocabulary token",
    "word " * 60,  # longer than the sequence length: cut
    "unknown words everywhere xyzzy",
]


def test_standardize_lowercases_ascii_only_and_strips_ascii_punctuation():
    """'ÉCOLE' keeps its É (the layer's lower-casing is ASCII only); punctuation goes."""
    assert standardize("ÉCOLE, Don't!") == "École dont"


def test_split_on_ascii_whitespace_only():
    """Tabs and newlines split; a no-break space does not; empty tokens are dropped."""
    assert split(" a\tb\n\nc\u00a0d ") == ["a", "b", "c\u00a0d"]


def test_encode_pads_truncates_and_marks_unknown_words():
    """Known words get their index, unknown ones 1, the rest of the row padding 0."""
    tok = CaptionTokenizer(vocabulary=["", "[UNK]", "red", "dress"], sequence_length=4)
    ids = tok.encode(["Red DRESS zz", None, "dress " * 9])
    assert ids.dtype == np.int64 and ids.shape == (3, 4)
    assert ids[0].tolist() == [2, 3, OOV_ID, PAD_ID]
    assert ids[1].tolist() == [PAD_ID] * 4
    assert ids[2].tolist() == [3, 3, 3, 3]


def test_vocabulary_without_padding_token_is_refused():
    """A vocabulary that does not start with '' cannot be the layer's: ValueError."""
    with pytest.raises(ValueError, match="padding"):
        CaptionTokenizer(vocabulary=["[UNK]", "a"], sequence_length=3)


def test_round_trip_through_dict():
    """to_dict/from_dict keep the vocabulary and the length (tokenizer.json)."""
    tok = CaptionTokenizer(vocabulary=["", "[UNK]", "café"], sequence_length=5)
    again = CaptionTokenizer.from_dict(tok.to_dict())
    assert again.encode(["café x"]).tolist() == tok.encode(["café x"]).tolist()


@pytest.mark.slow
def test_same_ids_as_the_keras_layer_on_odd_text():
    """On empty, missing, non-ASCII, punctuation-only, odd-whitespace and over-long
    captions, the ids equal those of an adapted Keras TextVectorization layer."""
    import keras

    from tagger.tokenizer import SUPPORTED

    layer = keras.layers.TextVectorization(
        max_tokens=50,
        output_sequence_length=8,
        standardize=SUPPORTED["standardize"],
        split=SUPPORTED["split"],
    )
    layer.adapt(VOCAB_TEXTS)
    tok = CaptionTokenizer(vocabulary=[str(t) for t in layer.get_vocabulary()], sequence_length=8)
    texts = [t or "" for t in ODD]
    want = np.asarray(layer(np.array(texts, dtype=str).reshape(-1, 1)))
    got = tok.encode(ODD)
    for text, w, g in zip(ODD, want, got, strict=True):
        assert g.tolist() == w.tolist(), f"{text!r}: keras {w.tolist()} vs ours {g.tolist()}"
    # The odd cases really exercise the vocabulary: some non-ASCII tokens are known.
    assert any(i > OOV_ID for i in tok.encode(["école café"])[0])
