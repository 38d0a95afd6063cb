"""The versioned model bundle: what training exports and what workers and the gateway load.

A bundle is a folder::

    bundle.json   format, version, architecture, embed_dim, image preprocessing, attribute
                  schema, metrics, training-config hash, sha256 + size of every other file
    image.pt      state dict of the image tower (backbone, neck, SSAN heads, APR head)
    text.pt       state dict of the text tower (incl. the SSAN heads it shares with image.pt)
    concept.pt    state dict of the AAIPR attribute -> concept generator
    vocab.json    the word vocabulary (Bi-LSTM text towers)

Every ``.pt`` holds tensors only, so ``torch.load(weights_only=True)`` reads it. Large floating
tensors (convolution, linear, embedding and LSTM weights) are stored as float16 by default
(``bundle.json`` ``weights_dtype``), which halves the folder; small ones (biases, BatchNorm
statistics) stay float32, and loading casts everything back into the float32 model, so a
bundle's consumers never see half precision. The version
(``v20261123_1530_ab12cd``: UTC time of export and the first 6 hex digits of the weights'
sha256) is made of letters, digits and underscores, so ``detections_<version>`` is a valid Milvus
collection name. Loading reads only the parts asked for -- workers load ``("image",)``, the
gateway ``("text", "attributes")`` -- and checks their checksums first.

Example:
    >>> bundle = load_bundle("/path/to/bundle", parts=("image",))      # doctest: +SKIP
    >>> emb, attr_probs = bundle.encode_images([crop_bgr])               # doctest: +SKIP
    >>> emb.shape, attr_probs.shape                                      # doctest: +SKIP
    ((1, 1024), (1, 48))
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pathlib
import re
import shutil
import uuid
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

import pedsearch
from pedsearch.attributes import DEFAULT_TEXT_ATTRIBUTE_WEIGHT, AttributeSchema
from pedsearch.errors import BundleError, ConfigError, InvalidInput, PedsearchError

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
VOCAB_FILE = "vocab.json"
#: weight file of each part
PART_FILES = {"image": "image.pt", "text": "text.pt", "attributes": "concept.pt"}
VERSION_PATTERN = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,63}\Z")
CREATE_HINT = "create one with `pedsearch train --config ... --export`"
#: how weights may be stored (``save_bundle(weights_dtype=...)``)
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: floating tensors with fewer values stay float32 in a float16 bundle: they are a negligible
#: share of the bytes (biases, BatchNorm scales and running statistics), and BatchNorm's
#: running variances are where half precision's 3 significant digits would cost accuracy
SMALL_TENSOR = 4096


def default_bundle_path() -> pathlib.Path:
    """``pedsearch/bundles/default`` inside the installed package."""
    return pathlib.Path(pedsearch.__file__).resolve().parent / "bundles" / "default"


def make_version(digest: str, when: _dt.datetime | None = None) -> str:
    """``v<YYYYmmdd>_<HHMM>_<first 6 hex of digest>`` (UTC), a valid Milvus name suffix."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    return f"v{when:%Y%m%d_%H%M}_{digest[:6]}"


def check_version(version: str) -> str:
    """Raises:
    InvalidInput: ``version`` is not letters, digits, underscores starting with a letter
    (at most 64 characters), which Milvus collection names require."""
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise InvalidInput(
            f"model version {version!r} must be 1-64 letters, digits or underscores starting "
            "with a letter (it becomes part of a Milvus collection name)"
        )
    return version


def config_hash(train_config: Any) -> str | None:
    """sha256 of the canonical JSON of a training configuration (mapping or pydantic model)."""
    if train_config is None:
        return None
    if hasattr(train_config, "model_dump"):
        train_config = train_config.model_dump(mode="json")
    text = json.dumps(train_config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# save
# ------------------------------------------------------------------------------------------------

def save_bundle(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    version: str | None = None,
    vocab: Any = None,
    metrics: Mapping[str, Any] | None = None,
    train_config: Any = None,
    overwrite: bool = False,
    weights_dtype: str = "float16",
    init_from: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write ``model`` as a bundle folder ``out_dir`` (atomically: a temporary sibling folder
    is renamed into place; a bundle it overwrites is moved aside first and deleted last, so a
    kill midway leaves a whole copy of one or the other).

    Args:
        model: a :class:`~pedsearch.models.joint.PersonSearchModel` built by ``from_config``
            with all three parts.
        out_dir: the bundle folder to create.
        version: model version; ``None`` = :func:`make_version` of the weights' digest.
        vocab: the :class:`~pedsearch.models.tokenizer.Vocab`; ``None`` = the model's own.
        metrics: evaluation results (JSON-serialisable), e.g. ``{"t2i_rank1": 0.41}``.
        train_config: the training configuration (mapping or pydantic model); stored with its
            sha256.
        overwrite: replace an existing ``out_dir``.
        weights_dtype: ``"float16"`` (default: half the bytes; embeddings move by ~1e-3) or
            ``"float32"`` (bit-exact); see :func:`storage_state`.
        init_from: the bundle a fine-tuning run started from (``{"version": ...}``),
            recorded as the manifest's ``init_from``.

    Returns:
        the bundle folder.

    Raises:
        BundleError: the model lacks a part or its architecture, ``out_dir`` exists, or the
            metadata is not JSON-serialisable.
        InvalidInput: ``version`` is not a valid name.
    """
    from pedsearch.models.joint import PARTS

    out_dir = pathlib.Path(out_dir)
    arch = getattr(model, "arch", None)
    if arch is None:
        raise BundleError("the model has no architecture; build it with "
                          "PersonSearchModel.from_config(...)")
    missing = [p for p in PARTS if p not in model.parts]
    if missing:
        raise BundleError(f"a bundle needs every part; the model lacks {missing}")
    vocab = vocab if vocab is not None else model.vocab
    if model.text_encoder.needs_vocab:
        if vocab is None:
            raise BundleError("the text encoder needs its vocabulary; pass vocab=")
        if len(vocab) != model.text_encoder.embed.num_embeddings:
            raise BundleError(f"vocab has {len(vocab)} words but the text encoder embeds "
                              f"{model.text_encoder.embed.num_embeddings}")
    if version is not None:
        check_version(version)
    if weights_dtype not in WEIGHT_DTYPES:
        raise BundleError(f"weights_dtype must be one of {sorted(WEIGHT_DTYPES)}, not "
                          f"{weights_dtype!r}")
    out_dir = check_bundle_target(out_dir, overwrite=overwrite)
    try:
        metrics_json = json.loads(json.dumps(dict(metrics or {})))
        if hasattr(train_config, "model_dump"):
            train_config = train_config.model_dump(mode="json")
        train_json = json.loads(json.dumps(train_config, default=str))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"metrics / train_config must be JSON-serialisable: {exc}") from exc

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    old: pathlib.Path | None = None  # where a bundle this one replaces waits until it is in
    try:
        modules = tower_modules(model)
        files: dict[str, dict[str, Any]] = {}
        for part, module in modules.items():
            state = storage_state(module.state_dict(), WEIGHT_DTYPES[weights_dtype])
            path = tmp / PART_FILES[part]
            torch.save(state, path)
        if vocab is not None:
            vocab.save(tmp / VOCAB_FILE)
        for path in sorted(tmp.iterdir()):
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        digest = hashlib.sha256(
            "".join(files[n]["sha256"] for n in sorted(files)).encode()
        ).hexdigest()
        version = version or make_version(digest)
        image_encoder = model.image_encoder
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": version,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "pedsearch_version": pedsearch.__version__,
            "torch_version": torch.__version__,
            "weights_dtype": weights_dtype,
            "architecture": arch.model_dump(mode="json"),
            "embed_dim": model.embed_dim,
            "image": {
                "size": list(arch.image_size),
                "channel_order": "RGB",
                "pixel_mean": list(image_encoder.backbone.pixel_mean),
                "pixel_std": list(image_encoder.backbone.pixel_std),
            },
            "text": {"encoder": arch.text_encoder.type, "vocab": VOCAB_FILE if vocab else None},
            "schema": model.schema.to_dict(),
            "metrics": metrics_json,
            "train_config_hash": config_hash(train_json),
            "train_config": train_json,
            **({"init_from": dict(init_from)} if init_from else {}),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False))
        # an old bundle moves aside before the new one moves in: killed in between, one of
        # the two is whole at out_dir or beside it, never neither
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out_dir.exists():
            os.replace(old, out_dir)  # the new one did not move in: the old one goes back
        raise
    return out_dir


def validated_text_attribute_weight(metrics: Mapping[str, Any]) -> float:
    """The weight of CMAAM's attribute similarity a model's text queries are ranked with
    (:func:`pedsearch.attributes.latent_attribute_score`): 1, Eq. 19's plain sum, unless its
    validation ranked captions better by the joint embedding's cosine alone (``textla_mAP <
    text_mAP``), then 0. A model whose attribute heads learned little gains nothing from them
    (CMAAM Table 4: with L_MLC alone, LA 51.75 against L 52.00). Metrics from before LA was
    measured: 1.

    Args:
        metrics: validation metrics as a bundle records them (``text_mAP``, ``textla_mAP``).
    """
    la, latent = metrics.get("textla_mAP"), metrics.get("text_mAP")
    if isinstance(la, (int, float)) and isinstance(latent, (int, float)) and la < latent:
        return 0.0
    return DEFAULT_TEXT_ATTRIBUTE_WEIGHT


def check_bundle_target(out_dir: str | os.PathLike[str], *, overwrite: bool) -> pathlib.Path:
    """The absolute bundle folder to write, if writing it there is safe; raises otherwise.

    An existing folder is replaced only with ``overwrite``, and only if it is a bundle (it
    holds a ``bundle.json``) or empty: ``--out ~/thesis --overwrite`` must not delete a thesis.
    The current folder and those above it are never replaced.

    Raises:
        BundleError: the folder exists and may not (or must not) be replaced.
    """
    out = pathlib.Path(out_dir).expanduser().absolute()
    if not out.exists():
        return out
    if not overwrite:
        raise BundleError(f"{out} already exists; choose another folder, or replace it "
                          "(--overwrite on the command line, overwrite=True in Python)")
    if not out.is_dir():
        raise BundleError(f"{out} exists and is not a folder; choose another bundle folder")
    if pathlib.Path.cwd().resolve().is_relative_to(out.resolve()):
        raise BundleError(f"refusing to replace {out}: it is the current folder or one above it; "
                          "give the bundle a folder of its own, e.g. bundles/mine")
    if not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise BundleError(f"refusing to replace {out}: it is not a model bundle (no {MANIFEST}) "
                          "and not empty; choose another folder, or empty it yourself")
    return out


def tower_modules(model: Any) -> dict[str, Any]:
    """Bundle part -> the model's module it stores (``None`` where the model lacks it)."""
    return {"image": model.image_encoder, "text": model.text_encoder,
            "attributes": model.generator}


def storage_state(
    state: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A state dict as written to a ``.pt``: on the CPU, contiguous, and floating tensors of at
    least :data:`SMALL_TENSOR` values cast to ``dtype`` (integer buffers such as BatchNorm's
    ``num_batches_tracked`` and small tensors unchanged)."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if v.is_floating_point() and v.numel() >= SMALL_TENSOR:
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def model_state(state: Mapping[str, Any], reference: Mapping[str, torch.Tensor]
                ) -> dict[str, Any]:
    """A stored state dict cast back to the dtypes of the module's own ``reference`` state
    (float16 weights -> float32), so a half-precision file fills a float32 model."""
    out = dict(state)
    for k, v in state.items():
        ref = reference.get(k)
        if (isinstance(v, torch.Tensor) and ref is not None and v.is_floating_point()
                and v.dtype != ref.dtype):
            out[k] = v.to(ref.dtype)
    return out


# ------------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------------

class Bundle:
    """A loaded bundle: the towers asked for, in eval mode on ``device``, behind batch methods
    that take plain Python / numpy and return float32 numpy.

    Attributes:
        path, version, schema, embed_dim, metrics, parts, device, manifest.
        image_size: ``(H, W)`` crops are resized to. model: the
        :class:`~pedsearch.models.joint.PersonSearchModel`.
    """

    def __init__(self, *, path: pathlib.Path, manifest: dict[str, Any], model: Any,
                 device: torch.device) -> None:
        self.path = path
        self.manifest = manifest
        self.model = model
        self.device = device
        self.version: str = manifest["version"]
        self.schema: AttributeSchema = model.schema
        self.embed_dim: int = int(manifest["embed_dim"])
        self.metrics: dict[str, Any] = dict(manifest.get("metrics") or {})
        self.parts: tuple[str, ...] = model.parts
        image = manifest["image"]
        self.image_size: tuple[int, int] = (int(image["size"][0]), int(image["size"][1]))
        self.pixel_mean = tuple(float(x) for x in image["pixel_mean"])
        self.pixel_std = tuple(float(x) for x in image["pixel_std"])

    @property
    def text_attribute_weight(self) -> float:
        """The weight its text queries are ranked with (:func:`validated_text_attribute_weight`
        of its metrics)."""
        return validated_text_attribute_weight(self.metrics)

    def __repr__(self) -> str:
        return (f"Bundle(version={self.version!r}, parts={self.parts}, "
                f"embed_dim={self.embed_dim}, device={self.device})")

    def _need(self, part: str) -> None:
        if part not in self.parts:
            raise BundleError(f"bundle {self.version} was loaded without its {part!r} part; "
                              f"load_bundle(..., parts=(..., {part!r}))")

    @torch.inference_mode()
    def encode_images(
        self, crops: Sequence[np.ndarray], *, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed person crops.

        Args:
            crops: BGR uint8 arrays ``(h, w, 3)`` of any size (as OpenCV decodes them).
            batch_size: crops per forward pass.

        Returns:
            ``(embeddings (B, D) float32, unit L2 norm; attribute probabilities
            (B, schema.dim) float32)``.

        Raises:
            InvalidInput: a crop is not a BGR uint8 image (the message names its index).
        """
        from pedsearch.models.image import attribute_probs, preprocess_crops

        self._need("image")
        if isinstance(crops, np.ndarray) and crops.ndim == 3:
            raise InvalidInput("encode_images takes a list of crops, not one (h, w, 3) image")
        embs, probs = [], []
        for start in range(0, len(crops), max(1, batch_size)):
            chunk = crops[start : start + batch_size]
            try:
                x = preprocess_crops(chunk, size=self.image_size, mean=self.pixel_mean,
                                     std=self.pixel_std)
            except InvalidInput as exc:  # report the index in the caller's list
                raise InvalidInput(_shift_index(exc.message, start)) from None
            out = self.model.encode_image(x.to(self.device))
            embs.append(out["embedding"].float().cpu().numpy())
            probs.append(attribute_probs(out["attr_logits"], self.schema).float().cpu().numpy())
        if not embs:
            return (np.zeros((0, self.embed_dim), np.float32),
                    np.zeros((0, self.schema.dim), np.float32))
        return np.concatenate(embs), np.concatenate(probs)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """Embed free-text queries -> ``(B, D)`` float32 unit vectors.

        Raises:
            InvalidInput: a text is not a string or has no words (names its index).
        """
        return self._texts(texts, batch_size)[0]

    @torch.inference_mode()
    def text_attribute_probs(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """Attributes the texts describe (CMAAM's attribute space) -> ``(B, schema.dim)``."""
        return self._texts(texts, batch_size)[1]

    @torch.inference_mode()
    def encode_texts_with_attributes(self, texts: Sequence[str], *, batch_size: int = 256
                                     ) -> tuple[np.ndarray, np.ndarray]:
        """Both of one pass: ``(B, D)`` unit embeddings and ``(B, schema.dim)`` attribute
        probabilities (:meth:`encode_texts`, :meth:`text_attribute_probs`)."""
        return self._texts(texts, batch_size)

    def _texts(self, texts: Sequence[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        from pedsearch.models.image import attribute_probs

        self._need("text")
        if isinstance(texts, str):
            raise InvalidInput("encode_texts takes a list of strings, not one string")
        embs, probs = [], []
        for start in range(0, len(texts), max(1, batch_size)):
            try:
                ids, lengths = self.model.tokenize(list(texts[start : start + batch_size]))
            except InvalidInput as exc:
                raise InvalidInput(_shift_index(exc.message, start)) from None
            out = self.model.encode_text(ids.to(self.device), lengths.to(self.device))
            embs.append(out["embedding"].float().cpu().numpy())
            probs.append(attribute_probs(out["attr_logits"], self.schema).float().cpu().numpy())
        if not embs:
            return (np.zeros((0, self.embed_dim), np.float32),
                    np.zeros((0, self.schema.dim), np.float32))
        return np.concatenate(embs), np.concatenate(probs)

    def attribute_vectors(self, sets: Sequence[Mapping[str, str | list[str]]]) -> np.ndarray:
        """Attribute sets -> the generator's input vectors ``(B, schema.dim)`` float32.

        Raises:
            InvalidInput: unknown family or value, several values for a single family, or an
                empty set (names its index).
        """
        if isinstance(sets, Mapping):
            raise InvalidInput("encode_attribute_sets takes a list of attribute sets")
        vectors = np.zeros((len(sets), self.schema.dim), np.float32)
        for i, labels in enumerate(sets):
            if not isinstance(labels, Mapping) or not labels:
                raise InvalidInput(f"attribute set {i} must be a non-empty mapping "
                                   "family -> value or list of values")
            try:
                vectors[i], _ = self.schema.encode(labels)
            except InvalidInput as exc:
                raise InvalidInput(f"attribute set {i}: {exc.message}") from None
        return vectors

    @torch.inference_mode()
    def encode_attribute_sets(
        self, sets: Sequence[Mapping[str, str | list[str]]]
    ) -> np.ndarray:
        """Embed attribute queries (``{"gender": "female", "upper_color": ["red"]}``) with the
        AAIPR generator -> ``(B, D)`` float32 unit vectors. Families left out are open."""
        self._need("attributes")
        vectors = self.attribute_vectors(sets)
        if len(vectors) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        out = self.model.encode_attributes(torch.from_numpy(vectors).to(self.device))
        return out["embedding"].float().cpu().numpy()


def _shift_index(message: str, offset: int) -> str:
    """Rewrite ``crop 3`` / ``text 3`` of a batch into the index of the whole list."""
    if offset == 0:
        return message
    return re.sub(r"^(crop|text) (\d+)", lambda m: f"{m.group(1)} {int(m.group(2)) + offset}",
                  message)


def load_bundle(
    path: str | os.PathLike[str] | None = None,
    *,
    parts: Iterable[str] = ("image", "text", "attributes"),
    device: str | torch.device = "cpu",
) -> Bundle:
    """Load the towers ``parts`` of a bundle onto ``device``.

    Args:
        path: bundle folder; ``None`` = :func:`default_bundle_path`.
        parts: subset of ``("image", "text", "attributes")``; only their files are read.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Raises:
        BundleError: the folder, ``bundle.json`` or a needed file is missing or corrupt, a
            checksum differs, or the weights do not fit the architecture (names the file).
    """
    from pedsearch.models.joint import PARTS, ModelArchitecture, PersonSearchModel
    from pedsearch.models.tokenizer import Vocab

    root = pathlib.Path(path) if path is not None else default_bundle_path()
    parts = tuple(dict.fromkeys(parts))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise BundleError(
            f"unknown bundle parts {unknown or list(parts)}; known: {', '.join(PARTS)}"
        )
    if not root.is_dir():
        raise BundleError(f"no model bundle at {root}; {CREATE_HINT}")
    manifest = _read_manifest(root)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"bad device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but torch sees no CUDA GPU")

    try:
        arch = ModelArchitecture.parse(manifest["architecture"])
        schema = AttributeSchema.from_dict(manifest["schema"])
    except (PedsearchError, KeyError, TypeError) as exc:
        raise BundleError(f"{root / MANIFEST}: architecture or schema is invalid: {exc}") from exc
    if arch.embed_dim != manifest["embed_dim"]:
        raise BundleError(f"{root / MANIFEST}: embed_dim {manifest['embed_dim']} does not match "
                          f"the architecture ({arch.embed_dim})")
    _check_image_section(root / MANIFEST, manifest["image"], tuple(arch.image_size))

    vocab = None
    if "text" in parts and manifest.get("text", {}).get("vocab"):
        vocab_path = root / VOCAB_FILE
        _verify(root, manifest, VOCAB_FILE)
        try:
            vocab = Vocab.load(vocab_path)
        except InvalidInput as exc:
            raise BundleError(f"{vocab_path}: {exc.message}") from exc
    for part in parts:
        _verify(root, manifest, PART_FILES[part])

    try:
        model = PersonSearchModel.from_config(arch, schema=schema, vocab=vocab, parts=parts,
                                              pretrained=False)
    except ConfigError as exc:
        raise BundleError(f"{root}: cannot rebuild the model: {exc.message}") from exc
    if model.image_encoder is not None:
        backbone = model.image_encoder.backbone
        for key, want in (("pixel_mean", backbone.pixel_mean), ("pixel_std", backbone.pixel_std)):
            if not np.allclose(manifest["image"][key], want, atol=1e-6):
                raise BundleError(f"{root / MANIFEST}: image.{key} {manifest['image'][key]} is "
                                  f"not the {arch.backbone.type} backbone's {list(want)}; the "
                                  "bundle was edited by hand or is damaged: export it again")
    modules = tower_modules(model)
    for part in parts:
        file = root / PART_FILES[part]
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt file
            raise BundleError(f"{file} cannot be read as tensors: {exc}") from exc
        if not isinstance(state, Mapping):
            raise BundleError(f"{file} holds a {type(state).__name__}, not a state dict")
        try:
            modules[part].load_state_dict(model_state(state, modules[part].state_dict()),
                                          strict=True)
        except RuntimeError as exc:
            raise BundleError(f"{file} does not fit the {part} tower of the architecture: "
                              f"{exc}") from exc
    model.to(dev).eval()
    if model.image_encoder is not None:
        # NHWC is ~15-20 % faster for the depthwise convolutions on CPU (measured, 256 x 128);
        # preprocess_crops already yields NHWC-strided batches
        model.image_encoder.to(memory_format=torch.channels_last)
    return Bundle(path=root, manifest=manifest, model=model, device=dev)


def _check_image_section(file: pathlib.Path, image: Mapping[str, Any],
                         size: tuple[int, int]) -> None:
    """``bundle.json``'s ``image`` (no checksum guards it) against the architecture: crops
    prepared at another size or normalisation would embed without an error, and wrongly."""
    try:
        got = tuple(int(x) for x in image["size"])
        stats = [[float(x) for x in image[k]] for k in ("pixel_mean", "pixel_std")]
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{file}: 'image' holds a value that is not a number ({exc}); the "
                          "bundle was edited by hand or is damaged: export it again") from None
    if got != size:
        raise BundleError(f"{file}: image.size {list(got)} is not the architecture's input size "
                          f"{list(size)}; the bundle was edited by hand or is damaged: export it "
                          "again")
    if any(len(v) != 3 for v in stats) or min(stats[1]) <= 0:
        raise BundleError(f"{file}: image.pixel_mean and pixel_std must be three numbers each "
                          "(std above 0); export the bundle again")


def read_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``bundle.json`` of a bundle (no weights read); for listing versions and metrics."""
    root = pathlib.Path(path) if path is not None else default_bundle_path()
    if not root.is_dir():
        raise BundleError(f"no model bundle at {root}; {CREATE_HINT}")
    return _read_manifest(root)


def _read_manifest(root: pathlib.Path) -> dict[str, Any]:
    file = root / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError:
        raise BundleError(
            f"{file} is missing: {root} is not a model bundle; {CREATE_HINT}"
        ) from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{file} is corrupt: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{file} is not a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{file}: bundle format {manifest.get('format')!r} is not supported by "
                          f"pedsearch {pedsearch.__version__} (reads format {BUNDLE_FORMAT})")
    required = ("version", "architecture", "embed_dim", "image", "schema", "files")
    absent = [k for k in required if k not in manifest]
    if absent:
        raise BundleError(f"{file} lacks {absent}")
    # bundle.json is the one file no checksum guards: check the shape of what is read from it
    files, image = manifest["files"], manifest["image"]
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()):
        raise BundleError(f"{file}: 'files' must map each file name to its sha256; the bundle "
                          "was edited by hand or is damaged: export it again")
    if not isinstance(image, dict) or not {"size", "pixel_mean", "pixel_std"} <= image.keys():
        raise BundleError(f"{file}: 'image' must give size, pixel_mean and pixel_std; the bundle "
                          "was edited by hand or is damaged: export it again")
    if not isinstance(manifest["schema"], dict):
        raise BundleError(f"{file}: 'schema' must be the attribute schema's mapping")
    try:
        check_version(manifest["version"])
    except InvalidInput as exc:
        raise BundleError(f"{file}: {exc.message}") from exc
    return manifest


def _verify(root: pathlib.Path, manifest: Mapping[str, Any], name: str) -> None:
    file = root / name
    entry = manifest["files"].get(name)
    if entry is None:
        raise BundleError(f"{root / MANIFEST} lists no {name}")
    if not file.is_file():
        raise BundleError(f"{file} is missing from the bundle")
    actual = sha256_file(file)
    if actual != entry.get("sha256"):
        raise BundleError(f"{file} is corrupt: sha256 {actual[:12]}... differs from "
                          f"{str(entry.get('sha256'))[:12]}... recorded in {MANIFEST}")
