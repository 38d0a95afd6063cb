"""PedestrianDataset and collate on small images written here, and on real PETA crops."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest
import torch

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput, NotFound
from pedsearch.synthetic.captions import parse_attributes
from training.datasets import ImageRecord, default_data_root
from training.datasets.peta import load_peta
from training.datasets.torch_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PedestrianDataset,
    collate,
    read_rgb,
    swap_left_right,
)

SCHEMA = AttributeSchema.default()
RED = (200, 40, 60)  # RGB


def _image(path: pathlib.Path, rgb=RED, size=(96, 48)) -> pathlib.Path:
    img = np.zeros((*size, 3), np.uint8)
    img[:] = rgb
    img[size[0] // 2:, :] = (30, 60, 200)  # blue lower half
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture()
def records(tmp_path) -> list[ImageRecord]:
    labels = {"gender": "female", "upper_color": ["red"], "lower_color": ["blue"],
              "sleeve": "long", "lower_type": "pants", "lower_length": "long", "hat": "no"}
    return [
        ImageRecord(path=_image(tmp_path / "a.png"), pid="peta/PRID/0001", source="peta",
                    labels=labels),
        ImageRecord(path=_image(tmp_path / "b.png"), pid="synthetic/7", source="synthetic",
                    labels=labels, captions=("A woman with a bag on her left shoulder.",
                                             "The woman looks to her right.")),
        ImageRecord(path=_image(tmp_path / "c.png"), pid="market1501/0002",
                    source="market1501"),
    ]


def _ds(records, **kw):
    kw.setdefault("train", False)
    return PedestrianDataset(records, schema=SCHEMA, image_size=(64, 32), **kw)


def test_sample_layout_and_normalisation(records):
    ds = _ds(records)
    s = ds[0]
    assert s["image"].shape == (3, 64, 32) and s["image"].dtype == torch.float32
    expect = (np.array(RED) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(s["image"][:, 5, 16].numpy(), expect, atol=0.02)
    assert s["attr_target"].shape == (SCHEMA.dim,) and s["attr_mask"].shape == (SCHEMA.dim,)
    assert s["attr_target"][SCHEMA.index("upper_color", "red")] == 1
    assert s["attr_mask"][SCHEMA.family("footwear").slice].sum() == 0
    assert ds.num_pids == 3 and s["pid"] == ds.pid_index["peta/PRID/0001"]
    assert isinstance(s["caption"], str) and s["caption"]
    stated = parse_attributes(s["caption"])
    assert all(stated[k] == v for k, v in records[0].labels.items() if k in stated)
    assert ds[2]["caption"] == "" and ds[2]["attr_mask"].sum() == 0  # no labels, no captions


def test_caption_pools(records):
    ds = _ds(records, captions_per_image=3, seed=1)
    assert len(ds.captions(0)) == 3 and len(set(ds.captions(0))) > 1  # written from labels
    assert ds.captions(1) == records[1].captions  # stored captions win
    assert ds.captions(0) == _ds(records, captions_per_image=3, seed=1).captions(0)
    assert ds.captions(0) != _ds(records, captions_per_image=3, seed=2).captions(0)
    assert ds[1]["caption"] == records[1].captions[0]  # eval: the first caption
    assert len(ds.caption_pairs()) == 3 + 2


def test_train_randomness_is_per_seed_epoch_index(records):
    ds = _ds(records, train=True, seed=5)
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    ds.set_epoch(1)
    images = [ds[0]["image"]]
    for e in range(2, 8):
        ds.set_epoch(e)
        images.append(ds[0]["image"])
    assert any(not torch.equal(images[0], im) for im in images[1:])


def test_augmentation_preserves_hue(records):
    ds = _ds(records, train=True, pad=4, brightness=0.3, contrast=0.3)
    mean = np.asarray(IMAGENET_MEAN) * 255
    std = np.asarray(IMAGENET_STD) * 255
    for epoch in range(6):
        ds.set_epoch(epoch)
        x = ds[0]["image"].numpy().transpose(1, 2, 0) * std + mean
        px = np.clip(np.round(x[16, 16]), 0, 255).astype(np.uint8)  # inside the red half
        hue = cv2.cvtColor(px.reshape(1, 1, 3), cv2.COLOR_RGB2HSV)[0, 0, 0]
        red_hue = cv2.cvtColor(np.uint8([[RED]]), cv2.COLOR_RGB2HSV)[0, 0, 0]
        assert abs(int(hue) - int(red_hue)) <= 2


def test_flip_swaps_left_and_right_in_the_caption(records):
    ds = _ds(records, train=True, flip_p=1.0)
    caps = {ds[1]["caption"] for _ in range(1)}
    for e in range(10):
        ds.set_epoch(e)
        caps.add(ds[1]["caption"])
    assert caps == {"A woman with a bag on her right shoulder.", "The woman looks to her left."}
    assert swap_left_right("Left hand, right foot; leftover") == "Right hand, left foot; leftover"


def test_collate_and_dataloader(records):
    ds = _ds(records, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 64, 32)
    assert batch["pid"].dtype == torch.int64 and batch["pid"].shape == (2,)
    assert batch["attr_target"].shape == (2, SCHEMA.dim) == batch["attr_mask"].shape
    assert isinstance(batch["caption"], list) and len(batch["caption"]) == 2
    assert batch["index"].tolist() == [0, 1]
    with pytest.raises(InvalidInput):
        collate([])


def test_argument_and_file_errors(records, tmp_path):
    with pytest.raises(InvalidInput, match="at least one record"):
        _ds([])
    with pytest.raises(InvalidInput, match="image_size"):
        PedestrianDataset(records, schema=SCHEMA, image_size=(4, 4), train=False)
    with pytest.raises(InvalidInput, match="pid_index"):
        _ds(records, pid_index={"peta/PRID/0001": 0})
    with pytest.raises(InvalidInput):
        _ds(records, flip_p=2.0)
    missing = ImageRecord(path=tmp_path / "none.jpg", pid="x", source="t")
    with pytest.raises(NotFound):
        _ds([missing])[0]
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(InvalidInput, match="cannot be decoded"):
        read_rgb(tmp_path / "text.jpg")
    with pytest.raises(IndexError):
        _ds(records)[3]


@pytest.mark.needs_data
def test_real_peta_crops():
    root = default_data_root()
    if root is None or not (root / "peta").is_dir():
        pytest.skip("../shared/data not found: set PEDSEARCH_PATHS__DATA_ROOT")
    recs = load_peta(root)
    picks = [next(r for r in recs if r.subset == s)
             for s in ("TownCentre", "PRID", "GRID", "MIT", "i-LID")]
    ds = PedestrianDataset(picks, schema=SCHEMA, train=True, seed=0)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (5, 3, 256, 128)
    assert torch.isfinite(batch["image"]).all()
    assert all(len(c.split()) >= 5 for c in batch["caption"])
    assert (batch["attr_mask"].sum(1) > 30).all()
