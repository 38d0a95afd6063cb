"""Evaluation of the three query kinds and of attribute recognition, on a labelled image set.

Protocols (``training.metrics`` implements the arithmetic):

- **text -> image** (CMAAM / ViTAA / SSAN): every caption of every image is a query; the gallery
  is every image; a hit is an image of the caption's person. R@1/5/10 and mAP.
- **attribute -> image** (AAIPR Sec. 4.1, semantic IDs): every distinct attribute description
  of the gallery is one query, embedded by the attribute tower; a hit is any image with the same
  description. R@1/5/10 and mAP.
- **image -> image** re-identification (APR Sec. 5.1): one query image per identity with another
  image (from another camera when cameras are known), the rest is the gallery;
  same-identity-same-camera images are left out per query. Rank-1 and mAP.
- **attribute prediction baseline** (``attrpred``, AAIPR's comparison): the same attribute
  queries, images ranked by the likelihood of the query under the image tower's predicted
  attributes (:func:`attribute_likelihood`) instead of by the attribute tower's embedding.
- **attribute prediction baseline of text queries** (``textpred``): the same captions read by
  the text tower's attribute head (CMAAM's text attribute classifier), images ranked by how
  likely the caption's and the image's predicted attributes agree (:func:`attribute_agreement`)
  instead of by the joint embedding -- what a search through an attribute classifier alone
  would find.
- **latent + attribute similarity** (``textla``, CMAAM Eq. 19): the same captions, images
  ranked by the joint embedding's cosine plus the attribute similarity of the two towers'
  attribute predictions (:func:`pedsearch.attributes.latent_attribute_score`), as the gateway
  ranks a text query of a bundle whose validation found it better than ``text`` (its index
  searches that score over every stored detection, as this scores the whole gallery).
- **concept + soft re-ranking** (``attrsoft``): what the gateway answers for an attribute
  query with soft constraints -- the concept cosine plus its probability bonus
  (:func:`soft_attribute_scores`).
- **attribute recognition**: the image tower's attribute probabilities, each ``single`` family
  read by its most likely value, against the labels: PETA's mA plus APR's mean accuracy.

:func:`evaluate_bundle` evaluates a bundle folder through :func:`pedsearch.bundle.load_bundle`,
i.e. exactly what workers and the gateway will serve; the training job validates its live model
with the same code (:class:`ModelEncoders`). Results are also pictures: ``cmc.png`` /
``cmc.html`` with one CMC curve per protocol.

Example:
    >>> m = evaluate_bundle("runs/tiny/bundle", records, out_dir="runs/tiny/eval")  # doctest: +SKIP
    >>> round(m["text_R@1"], 3), round(m["attr_mA"], 3)                             # doctest: +SKIP
    (0.412, 0.803)
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from pedsearch.attributes import (
    DEFAULT_TEXT_ATTRIBUTE_WEIGHT,
    AttributeSchema,
    latent_attribute_score,
)
from pedsearch.config import DEFAULT_SOFT_WEIGHT, SOFT_PROBABILITY_FLOOR
from pedsearch.errors import InvalidInput
from training.datasets import ImageRecord, encode_record
from training.metrics import (
    attribute_metrics,
    attribute_query_protocol,
    one_hot_single_families,
    retrieval_metrics,
)

log = logging.getLogger("pedsearch.training")

#: Protocol name -> prefix of its metrics and label of its CMC curve.
PROTOCOLS = {"text": "text -> image", "attr": "attribute -> image", "image": "image -> image",
             "attrpred": "attribute -> image (attribute prediction)",
             "attrsoft": "attribute -> image (concept + soft re-ranking)",
             "textpred": "text -> image (attribute prediction)",
             "textla": "text -> image (latent + attribute similarity)"}
#: the gateway's default ``soft_weight``
SOFT_WEIGHT = DEFAULT_SOFT_WEIGHT
#: CMAAM Eq. 19's weight of the attribute similarity (``textla``; a bundle whose ``textla``
#: validates below ``text`` is served with 0, :attr:`pedsearch.bundle.Bundle.text_attribute_weight`)
TEXT_ATTRIBUTE_WEIGHT = DEFAULT_TEXT_ATTRIBUTE_WEIGHT
#: What each query scored, by protocol (``evaluate_encoders(per_query=...)``).
PerQuery = dict[str, dict[str, np.ndarray]]
#: Metrics averaged into ``score``, the number that ranks checkpoints.
SCORE_KEYS = ("text_mAP", "attr_mAP", "image_mAP")


# ------------------------------------------------------------------------------------------------
# the evaluation set
# ------------------------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Images with their labels and captions, ready for every protocol.

    Attributes:
        records: the gallery images.
        captions: caption queries; ``caption_owner[j]`` is the index of the image caption ``j``
            describes.
        targets, masks: ``(N, A)`` attribute targets and known-masks of the images.
        pids: ``(N,)`` int64 identity codes. cams: ``(N,)`` int64 camera codes (unknown cameras
            get unique negative codes).
    """

    records: list[ImageRecord]
    captions: list[str]
    caption_owner: np.ndarray
    targets: np.ndarray
    masks: np.ndarray
    pids: np.ndarray
    cams: np.ndarray

    @classmethod
    def from_records(
        cls,
        records: Sequence[ImageRecord],
        schema: AttributeSchema,
        *,
        seed: int = 0,
        captions_per_image: int = 1,
    ) -> "EvalSet":
        """Build the set; images without stored captions get captions written from their labels
        (by :class:`~training.datasets.torch_data.PedestrianDataset`, with ``seed``)."""
        from training.datasets.splits import camera_codes, pid_codes
        from training.datasets.torch_data import PedestrianDataset

        records = list(records)
        if not records:
            raise InvalidInput("nothing to evaluate: the evaluation split has no images")
        ds = PedestrianDataset(records, schema=schema, train=False, seed=seed,
                               captions_per_image=captions_per_image)
        pairs = ds.caption_pairs()
        enc = [encode_record(r, schema) for r in records]
        return cls(
            records=records,
            captions=[c for _, c in pairs],
            caption_owner=np.array([i for i, _ in pairs], np.int64),
            targets=np.stack([t for t, _ in enc]).astype(np.float32),
            masks=np.stack([m for _, m in enc]).astype(np.float32),
            pids=pid_codes(records),
            cams=camera_codes(records),
        )


# ------------------------------------------------------------------------------------------------
# encoders: the live model, or a bundle
# ------------------------------------------------------------------------------------------------
class Encoders(Protocol):
    def encode_images(self, records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
        """-> ``(embeddings (N, D), attribute probabilities (N, A))``."""

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> ``(unit embeddings (M, D), attribute probabilities (M, A))`` of the text tower."""

    def encode_attribute_vectors(self, vectors: np.ndarray) -> np.ndarray | None:
        """Generator inputs ``(S, A)`` -> ``(S, D)``; None when there is no attribute tower."""


class ModelEncoders:
    """A :class:`~pedsearch.models.joint.PersonSearchModel` in training, evaluated in place.

    Images are read by the training data pipeline without augmentation and mapped onto the
    backbone's normalisation, exactly as the training step feeds them.

    Args:
        model: the (unwrapped) model. image_size: ``(H, W)``. device: where it runs.
        batch_size: items per forward pass.
    """

    def __init__(self, *, model: Any, image_size: tuple[int, int], device: torch.device | str,
                 batch_size: int = 64) -> None:
        from training.step import renormalizer

        self.model = model
        self.image_size = tuple(image_size)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.renorm = renormalizer(model, self.device)

    @torch.no_grad()
    def encode_images(self, records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
        from pedsearch.models.image import attribute_probs
        from training.datasets.torch_data import PedestrianDataset

        was = self.model.training
        self.model.eval()
        ds = PedestrianDataset(records, schema=self.model.schema, image_size=self.image_size,
                               train=False, pad=0, flip_p=0.0, brightness=0.0, contrast=0.0)
        embs, probs = [], []
        try:
            for lo in range(0, len(ds), self.batch_size):
                x = torch.stack([ds[i]["image"] for i in range(lo, min(lo + self.batch_size,
                                                                          len(ds)))])
                x = x.to(self.device)
                if self.renorm is not None:
                    x = x * self.renorm[0] + self.renorm[1]
                out = self.model.encode_image(x)
                embs.append(out["embedding"].float().cpu().numpy())
                probs.append(attribute_probs(out["attr_logits"], self.model.schema)
                             .float().cpu().numpy())
        finally:
            self.model.train(was)
        return np.concatenate(embs), np.concatenate(probs)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        from pedsearch.models.image import attribute_probs

        was = self.model.training
        self.model.eval()
        embs, probs = [], []
        try:
            for lo in range(0, len(texts), 256):
                ids, lengths = self.model.tokenize(list(texts[lo:lo + 256]))
                out = self.model.encode_text(ids.to(self.device), lengths)
                embs.append(out["embedding"].float().cpu().numpy())
                probs.append(attribute_probs(out["attr_logits"], self.model.schema)
                             .float().cpu().numpy())
        finally:
            self.model.train(was)
        return np.concatenate(embs), np.concatenate(probs)

    @torch.no_grad()
    def encode_attribute_vectors(self, vectors: np.ndarray) -> np.ndarray | None:
        if getattr(self.model, "generator", None) is None:
            return None
        was = self.model.training
        self.model.eval()
        try:
            x = torch.from_numpy(np.asarray(vectors, np.float32)).to(self.device)
            return self.model.encode_attributes(x)["embedding"].float().cpu().numpy()
        finally:
            self.model.train(was)


class BundleEncoders:
    """A loaded :class:`pedsearch.bundle.Bundle`: crops are read from disk as BGR, the way the
    ingest workers hand them over."""

    def __init__(self, bundle: Any, *, batch_size: int = 64) -> None:
        self.bundle = bundle
        self.batch_size = batch_size

    def encode_images(self, records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        from training.datasets.torch_data import read_rgb

        embs, probs = [], []
        for lo in range(0, len(records), self.batch_size):
            crops = [cv2.cvtColor(read_rgb(r.path), cv2.COLOR_RGB2BGR)
                     for r in records[lo:lo + self.batch_size]]
            e, p = self.bundle.encode_images(crops, batch_size=self.batch_size)
            embs.append(e)
            probs.append(p)
        return np.concatenate(embs), np.concatenate(probs)

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.bundle.encode_texts_with_attributes(list(texts))

    def encode_attribute_vectors(self, vectors: np.ndarray) -> np.ndarray | None:
        if "attributes" not in self.bundle.parts:
            return None
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(vectors, np.float32)).to(self.bundle.device)
            return self.bundle.model.encode_attributes(x)["embedding"].float().cpu().numpy()


# ------------------------------------------------------------------------------------------------
# the protocols
# ------------------------------------------------------------------------------------------------
def attribute_likelihood(targets: np.ndarray, masks: np.ndarray, probs: np.ndarray,
                         eps: float = 1e-4) -> np.ndarray:
    """Attribute-prediction baseline of attribute -> image retrieval (AAIPR Sec. 4.2's
    "attribute prediction" methods): rank images by the log-likelihood of the query's known
    attribute values under the image tower's predicted probabilities, values independent.

    Args:
        targets, masks: ``(Q, A)`` query descriptions (1/0 targets; 1 = value known).
        probs: ``(G, A)`` predicted attribute probabilities of the gallery images.
        eps: probabilities are clipped to ``[eps, 1 - eps]`` so a confident miss stays finite.

    Returns:
        ``(Q, G)`` scores ``sum_j m_qj [t_qj log p_gj + (1 - t_qj) log (1 - p_gj)]``.
    """
    p = np.clip(np.asarray(probs, np.float64), eps, 1.0 - eps)
    t = np.asarray(targets, np.float64) * np.asarray(masks, np.float64)
    f = (1.0 - np.asarray(targets, np.float64)) * np.asarray(masks, np.float64)
    return t @ np.log(p).T + f @ np.log1p(-p).T


def attribute_agreement(query_probs: np.ndarray, gallery_probs: np.ndarray,
                        schema: AttributeSchema, eps: float = 1e-4) -> np.ndarray:
    """Attribute-prediction baseline of text -> image retrieval: the log-probability that the
    attributes predicted for a caption and for an image agree, families independent.

    A ``single`` family agrees with probability ``sum_v q_v g_v`` (both pick the same value), a
    ``multi`` value with ``q g + (1 - q)(1 - g)`` (both on or both off). A caption that does not
    mention a family leaves its prediction uncertain, which ranks every image about alike there.

    Args:
        query_probs: ``(Q, A)`` the text tower's attribute probabilities of the captions.
        gallery_probs: ``(G, A)`` the image tower's attribute probabilities of the images.
        schema: the attribute schema (its families' slices and kinds of ``A``).
        eps: added inside the logarithm so a confident disagreement stays finite.

    Returns:
        ``(Q, G)`` scores: the sum over families and ``multi`` values of ``log(agree + eps)``.
    """
    q = np.asarray(query_probs, np.float64)
    g = np.asarray(gallery_probs, np.float64)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != schema.dim or g.shape[1] != schema.dim:
        raise InvalidInput(f"attribute probabilities must be (Q, {schema.dim}) and "
                           f"(G, {schema.dim}), got {q.shape} and {g.shape}")
    scores = np.zeros((q.shape[0], g.shape[0]), np.float64)
    for fam in schema.families:
        qs, gs = q[:, fam.slice], g[:, fam.slice]
        if fam.kind == "single":
            scores += np.log(qs @ gs.T + eps)
        else:
            for j in range(qs.shape[1]):
                a, b = qs[:, j:j + 1], gs[:, j][None, :]
                scores += np.log(a * b + (1.0 - a) * (1.0 - b) + eps)
    return scores


def soft_attribute_scores(cosine: np.ndarray, targets: np.ndarray, masks: np.ndarray,
                          probs: np.ndarray, schema: AttributeSchema,
                          weight: float = SOFT_WEIGHT) -> np.ndarray:
    """The gateway's soft re-ranking of attribute queries, on a whole gallery: ``cosine +
    weight * geomean_f max_v P(f = v)`` over the query's families ``f`` and the values ``v`` it
    asks for (:func:`gateway.search.soft_bonus` on every hit).

    Args:
        cosine: ``(Q, G)`` concept-to-image cosine similarities.
        targets, masks: ``(Q, A)`` query descriptions; a value is asked for where both are 1.
        probs: ``(G, A)`` predicted attribute probabilities of the gallery images.
        schema: the attribute schema (its families' slices of ``A``).
        weight: the gateway's ``soft_weight``.

    Returns:
        ``(Q, G)`` scores.
    """
    asked = (np.asarray(targets) * np.asarray(masks)) > 0
    p = np.asarray(probs, np.float64)
    log_fit = np.zeros(np.shape(cosine), np.float64)  # (Q, G) sum of log best P per family
    families = np.zeros(asked.shape[0], np.float64)
    for fam in schema.families:
        a = asked[:, fam.slice]  # (Q, V)
        has = a.any(axis=1)
        best = np.where(a[:, None, :], p[None, :, fam.slice], -np.inf).max(axis=2)  # (Q, G)
        log_fit += np.where(has[:, None], np.log(np.maximum(best, SOFT_PROBABILITY_FLOOR)), 0.0)
        families += has
    bonus = np.where(families[:, None] > 0,
                     np.exp(log_fit / np.maximum(families, 1.0)[:, None]), 0.0)
    return np.asarray(cosine, np.float64) + weight * bonus


def concept_geometry(concepts: np.ndarray, images: np.ndarray, query_labels: np.ndarray,
                     gallery_labels: np.ndarray) -> dict[str, float]:
    """Where the generated concepts lie among the images: why concept search ranks as it does.

    Args:
        concepts: ``(S, D)`` unit concepts of the attribute queries.
        images: ``(G, D)`` unit image embeddings.
        query_labels: ``(S,)`` semantic ID of each query. gallery_labels: ``(G,)`` of each image.

    Returns:
        ``attr_cos_own`` / ``attr_cos_other``: mean cosine of a concept to the images of its own
        description / of the others; ``attr_concept_spread``: mean cosine between two concepts;
        ``attr_centroid_spread``: the same between two descriptions' image centroids. Concepts
        that crowd together (spread above the centroids') or stay far from their own images
        rank poorly, whatever the classifier they were trained against says.
    """
    cos = concepts @ images.T
    same = query_labels[:, None] == gallery_labels[None, :]
    cent = np.stack([images[gallery_labels == s].mean(axis=0) for s in query_labels])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    off = ~np.eye(len(concepts), dtype=bool)
    nan = float("nan")  # one query: no pair to compare; one description: no "other" images
    return {"attr_cos_own": float(cos[same].mean()) if same.any() else nan,
            "attr_cos_other": float(cos[~same].mean()) if (~same).any() else nan,
            "attr_concept_spread": float((concepts @ concepts.T)[off].mean()) if off.any() else nan,
            "attr_centroid_spread": float((cent @ cent.T)[off].mean()) if off.any() else nan}


def _retrieval(prefix: str, sim: np.ndarray, q: np.ndarray, g: np.ndarray,
               per_query: PerQuery | None = None, **kw: Any
               ) -> tuple[dict[str, float], np.ndarray]:
    m = retrieval_metrics(sim, q, g, ks=(1, 5, 10), **kw)
    if per_query is not None:
        valid = m["first_hit_rank"] > 0
        per_query[prefix] = {"rank": m["first_hit_rank"][valid], "ap": m["ap"][valid],
                             "cluster": np.asarray(q)[valid]}
    out = {f"{prefix}_R@{k}": m[f"R@{k}"] for k in (1, 5, 10)}
    out[f"{prefix}_mAP"] = m["mAP"]
    out[f"{prefix}_queries"] = float(m["num_valid_queries"])
    return out, m["cmc"]


def evaluate_encoders(
    encoders: Encoders,
    data: EvalSet,
    schema: AttributeSchema,
    *,
    out_dir: str | pathlib.Path | None = None,
    title: str = "evaluation",
    seed: int = 0,
    per_query: PerQuery | None = None,
) -> dict[str, float]:
    """Run every protocol the data and the encoders allow.

    Args:
        encoders: the model to evaluate (:class:`ModelEncoders` or :class:`BundleEncoders`).
        data: the labelled images (:meth:`EvalSet.from_records`).
        schema: attribute schema of the labels.
        out_dir: where ``metrics.json``, ``cmc.png`` and ``cmc.html`` go; None writes nothing.
        title: title of the pictures.
        seed: seed of the image -> image query choice.
        per_query: when given, filled with what each query scored, for paired comparisons of
            two models (:mod:`training.compare`): per protocol prefix, ``rank`` ``(Q,)`` the
            1-based rank of the first hit, ``ap`` ``(Q,)`` and ``cluster`` ``(Q,)`` the query's
            label (its person, or its description), over the queries with a hit in the
            gallery; under ``"recognition"``, ``probs`` (one-hot single families),
            ``targets``, ``masks`` ``(N, A)`` and ``cluster`` ``(N,)`` the images' persons.

    Returns:
        Flat metrics: ``text_R@1/5/10``, ``text_mAP``, ``attr_R@1/5/10``, ``attr_mAP``,
        ``image_R@1/5/10``, ``image_mAP``, the same of ``textpred`` / ``textla`` / ``attrpred`` /
        ``attrsoft``
        (fractions), ``*_queries`` (counts), ``attr_mA``,
        ``attr_mean_accuracy``, ``attr_instance_f1``, ``score`` (mean of the mAPs measured),
        ``images`` and ``ids`` (identities, so chance R@1 is about ``1 / ids``). A protocol
        the data cannot support (no captions, no labels, no identity with two images) is left
        out, with a log line saying why.
    """
    from training.datasets.splits import query_gallery_split

    metrics: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {}
    retrieve = functools.partial(_retrieval, per_query=per_query)
    img_emb, img_probs = encoders.encode_images(data.records)

    if data.captions:
        txt, txt_probs = encoders.encode_texts(data.captions)
        owners = data.pids[data.caption_owner]
        m, cmc = retrieve("text", txt @ img_emb.T, owners, data.pids)
        metrics.update(m)
        curves[PROTOCOLS["text"]] = cmc
        m, cmc = retrieve("textpred", attribute_agreement(txt_probs, img_probs, schema),
                          owners, data.pids)
        metrics.update(m)
        curves[PROTOCOLS["textpred"]] = cmc
        cos_a = schema.attribute_space(txt_probs) @ schema.attribute_space(img_probs).T
        m, cmc = retrieve("textla", latent_attribute_score(
            txt @ img_emb.T, cos_a, TEXT_ATTRIBUTE_WEIGHT), owners, data.pids)
        metrics.update(m)
        curves[PROTOCOLS["textla"]] = cmc
    else:
        log.info("text -> image skipped: the images have no captions and no labels")

    known = data.masks.any(axis=1)
    if known.any():
        try:
            queries = attribute_query_protocol(data.targets[known], data.masks[known])
        except InvalidInput as exc:
            log.info("attribute -> image skipped: %s", exc.message)
            queries = None
        if queries is not None:
            vec = queries.targets * queries.masks  # unknown values are open (0) for the generator
            att = encoders.encode_attribute_vectors(vec)
            if att is not None:
                cosine = att @ img_emb[known].T
                m, cmc = retrieve("attr", cosine, queries.query_labels, queries.gallery_labels)
                metrics.update(m)
                curves[PROTOCOLS["attr"]] = cmc
                metrics.update(concept_geometry(att, img_emb[known], queries.query_labels,
                                                queries.gallery_labels))
                m, cmc = retrieve("attrsoft", soft_attribute_scores(
                    cosine, queries.targets, queries.masks, img_probs[known], schema),
                    queries.query_labels, queries.gallery_labels)
                metrics.update(m)
                curves[PROTOCOLS["attrsoft"]] = cmc
            m, cmc = retrieve(
                "attrpred", attribute_likelihood(queries.targets, queries.masks,
                                                 img_probs[known]),
                queries.query_labels, queries.gallery_labels)
            metrics.update(m)
            curves[PROTOCOLS["attrpred"]] = cmc
        try:
            predicted = one_hot_single_families(img_probs[known], schema)
            rec = attribute_metrics(predicted, data.targets[known], data.masks[known],
                                    names=schema.names())
            if per_query is not None:
                per_query["recognition"] = {"probs": predicted, "targets": data.targets[known],
                                            "masks": data.masks[known],
                                            "cluster": data.pids[known]}
            metrics.update(attr_mA=rec["mA"], attr_mean_accuracy=rec["mean_accuracy"],
                           attr_instance_f1=rec["instance_f1"])
        except InvalidInput as exc:
            log.info("attribute recognition skipped: %s", exc.message)
    else:
        log.info("attribute protocols skipped: no image has attribute labels")

    split = query_gallery_split(data.records, seed=seed)
    if split.query:
        index = {id(r): i for i, r in enumerate(data.records)}
        qi = np.array([index[id(r)] for r in split.query], np.int64)
        gi = np.array([index[id(r)] for r in split.gallery], np.int64)
        m, cmc = retrieve("image", img_emb[qi] @ img_emb[gi].T, data.pids[qi], data.pids[gi],
                          query_cams=data.cams[qi], gallery_cams=data.cams[gi],
                          exclude_same_cam=True)
        metrics.update(m)
        curves[PROTOCOLS["image"]] = cmc
    else:
        log.info("image -> image skipped: no identity has two images")

    scored = [metrics[k] for k in SCORE_KEYS if k in metrics]
    metrics["score"] = float(np.mean(scored)) if scored else 0.0
    metrics["images"] = float(len(data.records))
    metrics["ids"] = float(len(np.unique(data.pids)))
    if out_dir is not None:
        write_results(metrics, curves, out_dir, title=title)
    return metrics


def write_results(
    metrics: dict[str, float], curves: dict[str, np.ndarray], out_dir: str | pathlib.Path,
    *, title: str,
) -> pathlib.Path:
    """``metrics.json``, and ``cmc.png`` + ``cmc.html`` when there are curves."""
    from training.plots import plot_cmc, plot_cmc_html

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if curves:
        plot_cmc(curves, out / "cmc.png", title=title)
        plot_cmc_html(curves, out / "cmc.html", title=title)
    return out


def evaluate_bundle(
    bundle_path: str | pathlib.Path | Any,
    records: Sequence[ImageRecord],
    *,
    out_dir: str | pathlib.Path | None = None,
    device: str = "cpu",
    title: str | None = None,
    seed: int = 0,
    per_query: PerQuery | None = None,
) -> dict[str, float]:
    """Evaluate a bundle folder, or a :class:`~pedsearch.bundle.Bundle` already loaded (then
    on its own device), on labelled images (see :func:`evaluate_encoders`).

    Raises:
        BundleError: the bundle cannot be loaded. InvalidInput: no images.
    """
    from pedsearch.bundle import Bundle, load_bundle

    bundle = (bundle_path if isinstance(bundle_path, Bundle)
              else load_bundle(bundle_path, device=device))
    data = EvalSet.from_records(records, bundle.schema, seed=seed)
    return evaluate_encoders(BundleEncoders(bundle), data, bundle.schema, out_dir=out_dir,
                             title=title or f"bundle {bundle.version}", seed=seed,
                             per_query=per_query)


__all__ = [
    "BundleEncoders",
    "EvalSet",
    "ModelEncoders",
    "PROTOCOLS",
    "attribute_likelihood",
    "evaluate_bundle",
    "evaluate_encoders",
    "write_results",
]
