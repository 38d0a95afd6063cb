"""Data sources are looked for before any is read: a missing folder is reported at once."""

from __future__ import annotations

import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import NotFound
from training.config import DataConfig
from training.data import check_source, load_records


def _data(*sources: dict) -> DataConfig:
    return DataConfig.model_validate({"sources": list(sources)})


def test_a_missing_peta_root_fails_before_the_synthetic_world_is_rendered(tmp_path):
    data = _data({"type": "synthetic", "num_ids": 4, "images_per_id": 2},
                 {"type": "peta", "root": str(tmp_path / "nowhere")})
    with pytest.raises(NotFound, match="no PETA data under .*nowhere"):
        load_records(data, output_dir=tmp_path / "run", schema=AttributeSchema.default())
    assert not (tmp_path / "run").exists()  # nothing rendered, nothing written


def test_caption_and_reid_sources_name_the_missing_path(tmp_path):
    (tmp_path / "reid_raw.json").write_text("[]")
    cap = _data({"type": "cuhk-pedes", "annotations": str(tmp_path / "reid_raw.json"),
                 "image_root": str(tmp_path / "imgs")}).sources[0]
    with pytest.raises(NotFound, match=r"cuhk-pedes data source's image folder .*imgs is not a"):
        check_source(cap)
    reid = _data({"type": "market1501", "root": str(tmp_path),
                  "attributes": str(tmp_path / "market_attribute.mat")}).sources[0]
    with pytest.raises(NotFound, match=r"image folder .*bounding_box_train is not a folder"):
        check_source(reid)
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(NotFound, match=r"attribute file .*market_attribute.mat is not a file"):
        check_source(reid)
    (tmp_path / "imgs").mkdir()
    check_source(cap)  # both there: nothing to say


def test_a_present_peta_root_passes(tmp_path):
    (tmp_path / "peta" / "CUHK" / "archive").mkdir(parents=True)
    check_source(_data({"type": "peta", "root": str(tmp_path)}).sources[0])


def test_a_misspelt_peta_subset_fails_before_anything_is_read(tmp_path):
    (tmp_path / "peta" / "CUHK" / "archive").mkdir(parents=True)
    (tmp_path / "peta" / "CUHK" / "archive" / "Label.txt").write_text("")
    check_source(_data({"type": "peta", "root": str(tmp_path), "subsets": ["CUHK"]}).sources[0])
    with pytest.raises(NotFound, match=r"'PRDI' not found; the data root has CUHK"):
        check_source(_data({"type": "peta", "root": str(tmp_path),
                            "subsets": ["CUHK", "PRDI"]}).sources[0])


def _caption_source(folder, pid: int, *, images: bool = True) -> dict:
    """A CUHK-PEDES-format source of one person, its image written unless ``images`` is off."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reid_raw.json").write_text(json.dumps([
        {"id": pid, "file_path": "p.png", "split": "train", "captions": ["a man in red"]}]))
    (folder / "imgs").mkdir(exist_ok=True)
    if images:
        import cv2
        import numpy as np

        cv2.imwrite(str(folder / "imgs" / "p.png"), np.zeros((8, 4, 3), np.uint8))
    return {"type": "cuhk-pedes", "annotations": str(folder / "reid_raw.json")}


def test_two_sources_of_one_type_keep_their_people_apart(tmp_path):
    """The public captions and the owner's own in the same format, both with person 1."""
    data = _data(_caption_source(tmp_path / "public", 1), _caption_source(tmp_path / "own", 1))
    records = load_records(data, output_dir=tmp_path / "run", schema=AttributeSchema.default())
    assert [r.pid for r in records] == ["cuhk-pedes/1", "cuhk-pedes#2/1"]


def test_relative_paths_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    """Ray Train workers run in folders of their own: a relative image path would not exist."""
    _caption_source(tmp_path / "mine", 3)
    monkeypatch.chdir(tmp_path)
    data = _data({"type": "cuhk-pedes", "annotations": "mine/reid_raw.json"})
    (record,) = load_records(data, output_dir=tmp_path / "run",
                             schema=AttributeSchema.default())
    assert record.path == tmp_path / "mine" / "imgs" / "p.png"


def test_missing_images_are_reported_before_training(tmp_path):
    data = _data(_caption_source(tmp_path / "mine", 3, images=False))
    with pytest.raises(NotFound, match=r"cuhk-pedes: 1 of its 1 images do not exist, e\.g\. "
                                       r".*mine/imgs/p\.png; check its image_root"):
        load_records(data, output_dir=tmp_path / "run", schema=AttributeSchema.default())


def test_images_the_active_losses_cannot_learn_from_are_refused(tmp_path):
    """A caption-only image got the semantic ID of the empty description (all such people one
    class in AAIPR's l_I), and one without caption or labels trained the text losses on the
    same stand-in text as every other."""
    import pathlib

    from pedsearch.errors import ConfigError
    from training.config import load_train_config
    from training.data import check_supervision
    from training.datasets import ImageRecord

    schema = AttributeSchema.default()
    cfg = load_train_config("tiny.yaml", environ={})
    labelled = ImageRecord(path=pathlib.Path("a.png"), pid="peta/1", source="peta",
                           labels={"gender": "female"})
    caption_only = ImageRecord(path=pathlib.Path("b.png"), pid="cuhk-pedes/2",
                               source="cuhk-pedes", captions=("a man in red",))
    bare = ImageRecord(path=pathlib.Path("c.png"), pid="market1501/3", source="market1501")
    check_supervision(cfg, [labelled], [True], schema)  # both kinds of supervision: fine
    with pytest.raises(ConfigError, match=r"1 of the 2 training images \(cuhk-pedes\) have no "
                                          r"attribute labels .* aaipr_"):
        check_supervision(cfg, [labelled, caption_only], [True, True], schema)
    with pytest.raises(ConfigError, match=r"\(market1501\) have neither a caption nor attribute "
                                          r"labels .* ssan"):
        check_supervision(cfg, [labelled, bare], [True, False], schema)
    # without the losses that need them, such images are fine
    off = {n: t.model_copy(update={"weight": 0.0}) for n, t in cfg.losses.items()
           if n.startswith("aaipr_")}
    check_supervision(cfg.model_copy(update={"losses": {**cfg.losses, **off}}),
                      [labelled, caption_only], [True, True], schema)
