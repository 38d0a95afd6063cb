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
