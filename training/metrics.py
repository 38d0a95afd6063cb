"""Evaluation metrics of the papers: retrieval (CMC, R@K, mAP) and attribute recognition (mA).

Three retrieval protocols share one function, :func:`retrieval_metrics`:

- **text -> image** (CMAAM Sec. 4 "Evaluation setup", ViTAA Sec. 4 "Evaluation protocols",
  SSAN Sec. 4): R@K is the fraction of queries with an image of the right person among the top
  K results; it is the CMC curve read at rank K.
- **image -> image re-id** (APR Sec. 5.1): CMC and mAP; on Market-1501 the gallery images of the
  query's identity taken by the query's camera are dropped for that query (cross-camera
  retrieval), which ``exclude_same_cam=True`` does when cameras are given.
- **attribute -> image** (AAIPR Sec. 3 and 4.1): images are grouped by *semantic ID* (identical
  attribute sets share an ID, :func:`semantic_ids`); each distinct attribute set is one query
  and a hit is any gallery image with the same set (:func:`attribute_query_protocol`).

Attribute recognition (:func:`attribute_metrics`) reports the label-based mean accuracy mA of
PETA-style evaluations (mean over attributes of (TPR + TNR) / 2), APR's mean per-attribute
classification accuracy (APR Sec. 5.1, "average recognition rate of all these attributes"), and
the instance-based accuracy / precision / recall / F1 used alongside mA on PETA and RAP.

All values are fractions in [0, 1], not percentages. All functions are pure numpy.

Example:
    >>> import numpy as np
    >>> sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    >>> m = retrieval_metrics(sim, np.array([0, 1]), np.array([0, 2, 1]))
    >>> m["R@1"], m["R@5"]
    (0.5, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pedsearch.errors import InvalidInput

#: Rows of the similarity matrix ranked at a time; bounds memory to ~ this x G x 17 bytes.
_QUERY_CHUNK = 256


# --------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------
def _as_1d(name: str, a: Any, n: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInput(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


def retrieval_metrics(
    sim: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    query_cams: np.ndarray | None = None,
    gallery_cams: np.ndarray | None = None,
    exclude_same_cam: bool = False,
) -> dict[str, Any]:
    """CMC curve, R@K and mAP of a query x gallery similarity matrix.

    Each query ranks the gallery by decreasing similarity; ties keep gallery order (a stable
    sort), so the result is deterministic. A gallery item is a *positive* of a query when their
    labels are equal (identity, or semantic ID for attribute queries).

    - CMC(k): fraction of valid queries whose first positive is ranked at k or better.
    - R@K = CMC(K) (CMAAM / ViTAA / SSAN "Recall@K", APR "rank-K accuracy").
    - AP of one query: the mean, over its positives, of the precision at each positive's rank
      (non-interpolated; the Market-1501 MATLAB kit averages adjacent precisions instead, which
      differs slightly when the first hit is not at rank 1). mAP: mean AP over valid queries.

    A query with no positive left in its gallery is *skipped*: it is counted in
    ``num_skipped_queries`` and contributes to neither CMC nor mAP.

    With ``exclude_same_cam`` (the Market-1501 / DukeMTMC re-id protocol), gallery items that
    have the query's label AND the query's camera are removed from that query's ranking before
    ranks are counted (they are neither hits nor misses). Items of other identities from the same
    camera stay.

    Args:
        sim: ``(Q, G)`` similarities, higher is more similar (e.g. cosine of L2-normalised
            embeddings). Must be finite.
        query_labels: ``(Q,)`` label of each query (any dtype comparable with ``==``).
        gallery_labels: ``(G,)`` label of each gallery item.
        ks: ranks at which R@K is reported; each a positive int. K larger than the gallery
            gives CMC at the last rank.
        query_cams: ``(Q,)`` camera of each query; required with ``exclude_same_cam``.
        gallery_cams: ``(G,)`` camera of each gallery item; required with ``exclude_same_cam``.
        exclude_same_cam: apply the same-identity-same-camera exclusion.

    Returns:
        A dict with
        ``"R@K"`` (float, one per K in ``ks``), ``"mAP"`` (float),
        ``"cmc"`` (``(G,)`` float64, CMC at ranks 1..G),
        ``"ap"`` (``(Q,)`` float64 AP per query, NaN for skipped queries),
        ``"first_hit_rank"`` (``(Q,)`` int64, 1-based rank of the first positive, -1 if skipped),
        ``"num_queries"``, ``"num_valid_queries"``, ``"num_skipped_queries"`` (ints).

    Raises:
        InvalidInput: shapes disagree, ``sim`` has NaN/inf, ``ks`` is not positive, cameras are
            missing for ``exclude_same_cam``, or no query has a positive in the gallery.
    """
    sim = np.asarray(sim)
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise InvalidInput(f"sim must be a non-empty (queries, gallery) matrix, got {sim.shape}")
    if not np.issubdtype(sim.dtype, np.number) or not np.isfinite(sim).all():
        raise InvalidInput("sim must hold finite numbers; check the embeddings for NaN/inf")
    n_q, n_g = sim.shape
    q_lab = _as_1d("query_labels", query_labels, n_q)
    g_lab = _as_1d("gallery_labels", gallery_labels, n_g)
    ks = tuple(ks)
    if not ks or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in ks):
        raise InvalidInput(f"ks must be positive integers, got {ks!r}")
    if exclude_same_cam:
        if query_cams is None or gallery_cams is None:
            raise InvalidInput("exclude_same_cam needs both query_cams and gallery_cams")
        q_cam = _as_1d("query_cams", query_cams, n_q)
        g_cam = _as_1d("gallery_cams", gallery_cams, n_g)

    cmc_counts = np.zeros(n_g, np.int64)
    ap = np.full(n_q, np.nan)
    first = np.full(n_q, -1, np.int64)
    for lo in range(0, n_q, _QUERY_CHUNK):
        hi = min(lo + _QUERY_CHUNK, n_q)
        order = np.argsort(-sim[lo:hi], axis=1, kind="stable")  # (q, G)
        same_id = g_lab[order] == q_lab[lo:hi, None]  # (q, G) in ranked order
        if exclude_same_cam:
            keep = ~(same_id & (g_cam[order] == q_cam[lo:hi, None]))
            hits = same_id & keep
            pos = np.cumsum(keep, axis=1)  # 1-based rank among kept items, at kept slots
        else:
            hits = same_id
            pos = np.broadcast_to(np.arange(1, n_g + 1), hits.shape)
        n_pos = hits.sum(axis=1)
        valid = n_pos > 0
        if not valid.any():
            continue
        h, p, npos = hits[valid], pos[valid], n_pos[valid]
        rank1 = p[np.arange(h.shape[0]), h.argmax(axis=1)]  # rank of the first hit
        np.add.at(cmc_counts, rank1 - 1, 1)
        prec_at_hits = np.where(h, np.cumsum(h, axis=1) / np.maximum(p, 1), 0.0)
        rows = np.flatnonzero(valid) + lo
        ap[rows] = prec_at_hits.sum(axis=1) / npos
        first[rows] = rank1

    n_valid = int((first > 0).sum())
    if n_valid == 0:
        raise InvalidInput(
            "no query has a positive in the gallery; check that query and gallery labels use "
            "the same ids (and, with exclude_same_cam, that identities appear on other cameras)"
        )
    cmc = np.cumsum(cmc_counts) / n_valid
    out: dict[str, Any] = {f"R@{int(k)}": float(cmc[min(int(k), n_g) - 1]) for k in ks}
    out.update(
        mAP=float(np.nanmean(ap)),
        cmc=cmc,
        ap=ap,
        first_hit_rank=first,
        num_queries=n_q,
        num_valid_queries=n_valid,
        num_skipped_queries=n_q - n_valid,
    )
    return out


# --------------------------------------------------------------------------------------------
# attribute -> image protocol (AAIPR)
# --------------------------------------------------------------------------------------------
def _attribute_keys(attr_targets: Any, masks: Any) -> np.ndarray:
    """``(N, A)`` int8 key per entry: 1 / 0 for known positives / negatives, -1 for unknown."""
    t = np.asarray(attr_targets)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise InvalidInput(f"attr_targets must be a non-empty (N, A) matrix, got {t.shape}")
    m = np.ones(t.shape, bool) if masks is None else np.asarray(masks)
    if m.shape != t.shape:
        raise InvalidInput(f"masks must have the shape of attr_targets {t.shape}, got {m.shape}")
    m = m.astype(bool)
    known = t[m]
    if not np.isin(known, (0, 1)).all():
        raise InvalidInput("attr_targets must be 0 or 1 wherever the mask is set")
    keys = np.where(m, t, -1).astype(np.int8)
    return keys


def semantic_ids(attr_targets: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """AAIPR semantic IDs: images with identical attribute sets share one ID.

    AAIPR (Sec. 3, Sec. 4.1) re-labels every image by its attribute description rather than its
    person ID, so different people with the same attributes have the same semantic ID. Here an
    entry's value is its target where the mask is set and "unknown" elsewhere, so two images
    share an ID only when they agree on every entry, unknowns included.

    Args:
        attr_targets: ``(N, A)`` 0/1 attribute targets (flat schema layout).
        masks: ``(N, A)`` 1 where the target is known; ``None`` means all known.

    Returns:
        ``(N,)`` int64 semantic IDs ``0..S-1``, numbered in order of first appearance.

    Raises:
        InvalidInput: shapes disagree or a known target is not 0/1.
    """
    keys = _attribute_keys(attr_targets, masks)
    _, first_idx, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    # np.unique numbers rows in sorted order; renumber by first appearance for readability.
    rank = np.empty(len(first_idx), np.int64)
    rank[np.argsort(first_idx, kind="stable")] = np.arange(len(first_idx))
    return rank[inverse.reshape(-1)]


@dataclass(frozen=True)
class AttributeQueries:
    """The attribute -> image evaluation set built by :func:`attribute_query_protocol`.

    Attributes:
        targets: ``(S, A)`` float32 attribute targets of each query (one per semantic ID).
        masks: ``(S, A)`` float32 masks of each query (1 = known).
        query_labels: ``(S,)`` int64 semantic ID of each query (``0..S-1``).
        gallery_labels: ``(N,)`` int64 semantic ID of each gallery image.
        counts: ``(S,)`` int64 number of gallery images of each semantic ID.
    """

    targets: np.ndarray
    masks: np.ndarray
    query_labels: np.ndarray
    gallery_labels: np.ndarray
    counts: np.ndarray

    @property
    def num_queries(self) -> int:
        return int(self.query_labels.shape[0])


def attribute_query_protocol(
    attr_targets: np.ndarray, masks: np.ndarray | None = None, *, min_images: int = 1
) -> AttributeQueries:
    """Build AAIPR's attribute -> image queries from a labelled gallery.

    Every distinct attribute set in the gallery becomes one query; its positives are the gallery
    images with the same set (same semantic ID). Encode ``targets``/``masks`` with the attribute
    tower, score them against the gallery embeddings, and pass the ``(S, N)`` similarity with
    ``query_labels`` and ``gallery_labels`` to :func:`retrieval_metrics`.

    Args:
        attr_targets: ``(N, A)`` 0/1 attribute targets of the gallery images.
        masks: ``(N, A)`` known-entry masks; ``None`` means all known.
        min_images: keep only semantic IDs with at least this many gallery images (all gallery
            images are kept as distractors either way).

    Returns:
        An :class:`AttributeQueries`.

    Raises:
        InvalidInput: bad shapes/values, ``min_images < 1``, or no semantic ID is left.
    """
    if min_images < 1:
        raise InvalidInput(f"min_images must be >= 1, got {min_images}")
    keys = _attribute_keys(attr_targets, masks)
    sid = semantic_ids(attr_targets, masks)
    n_sid = int(sid.max()) + 1
    counts = np.bincount(sid, minlength=n_sid)
    _, first = np.unique(sid, return_index=True)  # first image of each semantic ID 0..S-1
    chosen = np.flatnonzero(counts >= min_images)
    if chosen.size == 0:
        raise InvalidInput(f"no attribute set occurs in at least {min_images} gallery images")
    rows = keys[first[chosen]]
    return AttributeQueries(
        targets=(rows == 1).astype(np.float32),
        masks=(rows >= 0).astype(np.float32),
        query_labels=chosen.astype(np.int64),
        gallery_labels=sid,
        counts=counts[chosen].astype(np.int64),
    )


# --------------------------------------------------------------------------------------------
# attribute recognition
# --------------------------------------------------------------------------------------------
def _safe_ratio(num: np.ndarray, den: np.ndarray, agree: np.ndarray) -> np.ndarray:
    """``num / den`` per row; a 0/0 row is 1 when prediction and truth agree, else 0."""
    out = np.where(agree, 1.0, 0.0)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def attribute_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Attribute recognition metrics over binary attributes, masked entries ignored.

    Predictions are ``probs >= threshold``. Only entries whose mask is set count, so an unknown
    label is neither right nor wrong.

    Label-based (per attribute ``a``, over the samples where ``a`` is known):
        ``TPR = TP / P``, ``TNR = TN / N``, ``mA_a = (TPR + TNR) / 2``;
        ``accuracy_a = (TP + TN) / (P + N)``.
        An attribute with no known positive or no known negative has an undefined mA_a (NaN);
        it is listed in ``undefined_attributes`` and left out of ``mA``.
        ``mA`` = mean of the defined mA_a (PETA evaluation). ``mean_accuracy`` = mean of
        accuracy_a over attributes with any known entry (APR's "average recognition rate").

    Instance-based (per sample ``i`` over its known entries, with truth set Y_i and predicted
    set P_i; PETA/RAP): ``accuracy = |Y∩P| / |Y∪P|``, ``precision = |Y∩P| / |P|``,
    ``recall = |Y∩P| / |Y|``, each averaged over samples with at least one known entry;
    ``F1 = 2 * precision * recall / (precision + recall)`` of those averages. A 0/0 ratio counts
    as 1 when Y_i and P_i are both empty (nothing to find, nothing claimed) and 0 otherwise.

    For ``single`` families of the schema (softmax groups), each value is scored one-vs-rest;
    pass :func:`one_hot_single_families` output as ``probs`` to score the argmax instead.

    Args:
        probs: ``(N, A)`` probabilities in [0, 1] (after sigmoid/softmax, not logits).
        targets: ``(N, A)`` 0/1 targets.
        masks: ``(N, A)`` 1 where the target is known; ``None`` means all known.
        threshold: decision threshold on ``probs``.
        names: ``A`` attribute names (e.g. ``AttributeSchema.names()``); default ``"0".."A-1"``.

    Returns:
        A dict with floats ``mA``, ``mean_accuracy``, ``instance_accuracy``,
        ``instance_precision``, ``instance_recall``, ``instance_f1``; ints ``num_samples``,
        ``num_defined_attributes``; ``undefined_attributes`` (list of names);
        ``per_attribute`` (name -> dict of ``mA``, ``accuracy``, ``tpr``, ``tnr`` (floats, NaN
        when undefined), ``positives``, ``negatives`` (ints)); and ``note`` (how undefined
        attributes were treated).

    Raises:
        InvalidInput: shapes disagree, probabilities outside [0, 1], non-0/1 known targets,
            a bad threshold or names, or no attribute has both a positive and a negative.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise InvalidInput(f"probs must be a non-empty (N, A) matrix, got {p.shape}")
    t = np.asarray(targets)
    if t.shape != p.shape:
        raise InvalidInput(f"targets must have the shape of probs {p.shape}, got {t.shape}")
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        raise InvalidInput("probs must be probabilities in [0, 1]; apply sigmoid/softmax to logits")
    if not 0.0 < threshold < 1.0:
        raise InvalidInput(f"threshold must lie in (0, 1), got {threshold}")
    n, a = p.shape
    if names is None:
        names = [str(i) for i in range(a)]
    names = list(names)
    if len(names) != a or len(set(names)) != a:
        raise InvalidInput(f"names must be {a} distinct strings, got {len(names)}")
    keys = _attribute_keys(t, masks)  # validates masks and 0/1 targets
    known = keys >= 0
    y = keys == 1
    pred = (p >= threshold) & known

    pos = y.sum(axis=0)
    neg = (known & ~y).sum(axis=0)
    tp = (pred & y).sum(axis=0)
    tn = (known & ~pred & ~y).sum(axis=0)
    defined = (pos > 0) & (neg > 0)
    if not defined.any():
        raise InvalidInput(
            "no attribute has both a known positive and a known negative, so mA is undefined; "
            "evaluate on a larger or more varied set"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(pos > 0, tp / pos, np.nan)
        tnr = np.where(neg > 0, tn / neg, np.nan)
        acc = np.where(pos + neg > 0, (tp + tn) / (pos + neg), np.nan)
    ma_attr = np.where(defined, (tpr + tnr) / 2.0, np.nan)

    rows = known.any(axis=1)
    inter = (pred & y).sum(axis=1)[rows].astype(np.float64)
    n_pred = pred.sum(axis=1)[rows].astype(np.float64)
    n_true = y.sum(axis=1)[rows].astype(np.float64)
    union = n_pred + n_true - inter
    both_empty = union == 0
    i_acc = _safe_ratio(inter, union, both_empty).mean()
    i_prec = _safe_ratio(inter, n_pred, both_empty).mean()
    i_rec = _safe_ratio(inter, n_true, both_empty).mean()
    i_f1 = 2 * i_prec * i_rec / (i_prec + i_rec) if i_prec + i_rec > 0 else 0.0

    undefined = [nm for nm, d in zip(names, defined) if not d]
    per_attribute = {
        nm: {
            "mA": float(ma_attr[j]),
            "accuracy": float(acc[j]),
            "tpr": float(tpr[j]),
            "tnr": float(tnr[j]),
            "positives": int(pos[j]),
            "negatives": int(neg[j]),
        }
        for j, nm in enumerate(names)
    }
    return {
        "mA": float(np.nanmean(ma_attr)),
        "mean_accuracy": float(np.nanmean(acc)),
        "instance_accuracy": float(i_acc),
        "instance_precision": float(i_prec),
        "instance_recall": float(i_rec),
        "instance_f1": float(i_f1),
        "num_samples": int(n),
        "num_defined_attributes": int(defined.sum()),
        "undefined_attributes": undefined,
        "per_attribute": per_attribute,
        "note": (
            f"mA averages {int(defined.sum())} of {a} attributes; "
            f"{len(undefined)} have no known positive or no known negative in this set and are "
            "reported as undefined (NaN) and excluded"
        ),
    }


def one_hot_single_families(probs: np.ndarray, schema: Any) -> np.ndarray:
    """Replace each ``single`` family's probabilities by the one-hot of its argmax.

    Use before :func:`attribute_metrics` to score a softmax family by its most likely value
    (the way the model is decoded at query time) rather than one-vs-rest at a threshold.

    Args:
        probs: ``(N, D)`` probabilities in the flat layout of ``schema``.
        schema: a :class:`pedsearch.attributes.AttributeSchema` with ``dim == D``.

    Returns:
        ``(N, D)`` float32 copy; ``multi`` families are unchanged.

    Raises:
        InvalidInput: ``probs`` is not ``(N, schema.dim)``.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != schema.dim:
        raise InvalidInput(f"probs must have shape (N, {schema.dim}), got {p.shape}")
    out = p.copy()
    for fam in schema.families:
        if fam.kind != "single":
            continue
        block = p[:, fam.slice]
        hard = np.zeros_like(block)
        hard[np.arange(len(block)), block.argmax(axis=1)] = 1.0
        out[:, fam.slice] = hard
    return out
