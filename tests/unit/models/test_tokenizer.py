"""The word vocabulary: tokenising, building, batching, JSON round trip."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from pedsearch.config import PathsConfig
from pedsearch.errors import InvalidInput
from pedsearch.models.tokenizer import PAD, PAD_ID, UNK, UNK_ID, Vocab

DATA = PathsConfig().resolved_data_root()
CAPTIONS = ["A man in a red coat.", "A woman, with a RED bag!", "a man's black bag"]


def test_tokenize_lowercases_and_splits_on_punctuation():
    v = Vocab([PAD, UNK])
    assert v.tokenize("A Woman's RED t-shirt, jeans.") == ["a", "womans", "red", "t", "shirt",
                                                            "jeans"]
    keep = Vocab([PAD, UNK], punctuation="keep")
    assert keep.tokenize("red coat, black bag.") == ["red", "coat", ",", "black", "bag", "."]
    with pytest.raises(InvalidInput):
        v.tokenize(None)  # type: ignore[arg-type]


def test_build_orders_by_count_then_alphabet_with_min_count():
    v = Vocab.build(CAPTIONS, min_count=2)
    assert v.words == [PAD, UNK, "a", "bag", "red"]  # "man's" is "mans", so "man" counts 1
    assert (v.index(PAD), v.index(UNK)) == (PAD_ID, UNK_ID)
    assert Vocab.build(CAPTIONS, min_count=2) == v  # deterministic
    small = Vocab.build(CAPTIONS, max_size=4)
    assert small.words == [PAD, UNK, "a", "bag"]
    with pytest.raises(InvalidInput):
        Vocab.build(CAPTIONS, min_count=0)


def test_encode_batch_pads_truncates_and_maps_unknown_words():
    v = Vocab.build(CAPTIONS, max_length=4)
    ids, lengths = v.encode_batch(["a red zebra", "a man in a red coat", "bag"])
    assert ids.dtype == torch.long and lengths.tolist() == [3, 4, 1]
    assert ids.shape == (3, 4)
    assert ids[0].tolist() == [v.index("a"), v.index("red"), UNK_ID, PAD_ID]
    assert ids[2, 1:].tolist() == [PAD_ID] * 3
    assert v.decode(ids[1].tolist()) == ["a", "man", "in", "a"]
    ids, lengths = v.encode_batch(["a man in a red coat"], max_length=6)
    assert lengths.tolist() == [6]


@pytest.mark.parametrize("bad", ["", "  ...  ", 42])
def test_encode_batch_names_an_empty_or_bad_text(bad):
    v = Vocab.build(CAPTIONS)
    with pytest.raises(InvalidInput, match="text 1"):
        v.encode_batch(["a man", bad])


def test_json_round_trip(tmp_path: pathlib.Path):
    v = Vocab.build(CAPTIONS, punctuation="keep", max_length=20)
    path = v.save(tmp_path / "vocab.json")
    loaded = Vocab.load(path)
    assert loaded == v and loaded.max_length == 20 and loaded.punctuation == "keep"
    assert json.loads(path.read_text())["words"][:2] == [PAD, UNK]


def test_load_refuses_broken_files(tmp_path: pathlib.Path):
    bad = tmp_path / "vocab.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match="vocab.json"):
        Vocab.load(bad)
    bad.write_text(json.dumps({"format": 1, "words": ["a", "b"]}))
    with pytest.raises(InvalidInput, match="starts with"):
        Vocab.load(bad)
    bad.write_text(json.dumps({"format": 99, "words": [PAD, UNK]}))
    with pytest.raises(InvalidInput, match="format"):
        Vocab.load(bad)
    with pytest.raises(InvalidInput, match="missing.json"):
        Vocab.load(tmp_path / "missing.json")


@pytest.mark.needs_data
@pytest.mark.skipif(
    DATA is None or not (DATA / "cuhk-pedes" / "caption_val_new.json").is_file(),
    reason="CUHK-PEDES captions not found (set paths.data_root)",
)
def test_tokens_match_cuhk_pedes_processed_tokens():
    entries = json.loads((DATA / "cuhk-pedes" / "caption_val_new.json").read_text())
    v = Vocab.build(e["captions"] for e in entries)
    # CUHK-PEDES joins hyphenated words ("light-blue" -> "lightblue"); pedsearch splits them
    # ("light", "blue") so colour and length words stay visible. Apart from that, the same.
    same = [v.tokenize(e["captions"].replace("-", "")) in e["processed_tokens"] for e in entries]
    assert sum(same) / len(same) > 0.9
    assert len(v) > 1000
