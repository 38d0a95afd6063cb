"""``benchmarks/results.py`` writes docs/RESULTS.md: the PETA rows' configs, the verdicts and the
figures block a fresh checkout starts from (pure logic: no training runs here)."""

from __future__ import annotations

import pytest
import yaml


@pytest.fixture(scope="module")
def results(benchmark_script):
    return benchmark_script("results")


def _row(text: float, attr: float, image: float, **extra: float) -> dict[str, float]:
    return {"text_R@1": text, "text_mAP": text, "text_queries": 500.0,
            "attr_R@1": attr, "attr_mAP": attr, "attr_queries": 300.0,
            "image_R@1": image, "image_mAP": image, "image_queries": 150.0,
            "attr_mA": 0.7, "minutes": 1.0, **extra}


def test_peta_rows_train_on_peta_alone_with_the_rows_switches(results, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "CONFIG_DIR", tmp_path)
    paths = results.write_configs(200, 20, ["peta_aaipr_no_adv", "full"])
    body = yaml.safe_load(paths["peta_aaipr_no_adv"].read_text())
    assert body["data"] == {"sources": [{"type": "peta", "min_images_per_id": 2,
                                         "max_images_per_id": 3}]}
    assert body["losses"] == {"aaipr_discriminator": {"weight": 0.0}}
    assert body["epochs"] == body["eval_every"] == 11
    assert "data" not in yaml.safe_load(paths["full"].read_text())  # synthetic, from common


def test_peta_verdicts_compare_each_ablation_on_its_query_kind(results):
    res = {
        "peta_full": _row(0.30, 0.30, 0.50, ids=150.0, **{"textpred_mAP": 0.05,
                                                          "textpred_R@1": 0.02,
                                                          "attrpred_mAP": 0.29,
                                                          "attrpred_R@1": 0.2}),
        "peta_ssan_global": _row(0.10, 0.30, 0.50),   # far below on text: agrees
        "peta_aaipr_no_adv": _row(0.30, 0.31, 0.50),  # same attr mAP: noise
        "peta_vitaa_align": _row(0.20, 0.30, 0.50),   # adding alignment hurts: disagrees
    }
    text = "\n".join(results.peta_section(res, 20))
    assert "(150 identities: chance R@1 about 0.7 %)" in text
    assert "- full vs global only, ranking loss: text R@1 10.0 -> 30.0, agrees." in text
    assert "- full vs without adversary: attr mAP 31.0 -> 30.0, within noise" in text
    assert "- + alignment loss vs full: text R@1 30.0 -> 20.0, **disagrees**" in text
    assert "- full vs attribute prediction, text mAP: 5.0 -> 30.0, agrees." in text
    assert "attr mAP: 29.0 -> 30.0, within noise" in text
    # rows not run yet show dashes, not numbers from elsewhere
    assert "| CMAAM: without L_MLC | – | – |" in text


def test_the_doc_carries_every_figure_a_fresh_checkout_starts_from(results, tmp_path):
    res = {"full": _row(0.3, 0.3, 0.7), "peta_full": _row(0.2, 0.2, 0.5, ids=100.0)}
    doc = tmp_path / "RESULTS.md"
    doc.write_text(results.render(res, 200, 20, 12.0))
    stored = results.figures_in_doc(doc)
    assert stored["settings"] == results.common_config(200, 20)
    assert stored["peta"] == results.peta_settings(20)
    assert stored["rows"] == res  # queries counts included: the noise bands need them
    assert "--ids 200 --epochs 20 --peta`" in doc.read_text()


def test_a_doc_without_the_figures_block_starts_from_nothing(results, tmp_path):
    doc = tmp_path / "RESULTS.md"
    assert results.figures_in_doc(doc) == {}
    doc.write_text("# Results\n\n## All figures\n\n```json\n{\"full\": {}}\n```\n")
    assert results.figures_in_doc(doc) == {}  # the old form (no settings) is not comparable


def test_the_concept_paragraph_reads_the_shipped_figures(results):
    test = {"attr_R@1": 0.35, "attr_mAP": 0.33, "attrpred_R@1": 0.6, "attrpred_mAP": 0.534,
            "attrsoft_mAP": 0.55, "attr_cos_own": 0.546, "attr_cos_other": 0.292,
            "attr_concept_spread": 0.496, "attr_centroid_spread": 0.35}
    train = dict(test, **{"attr_R@1": 0.4, "attrpred_R@1": 0.8})
    text = " ".join(results.concept_paragraph({"synthetic": test, "synthetic_train": train}))
    assert "attr R@1 40.0 %" in text and "80.0 %" in text
    assert "own description is 0.55 (0.29 to the others)" in text
    assert "mAP 55.0 % against 53.4 %" in text
    assert results.concept_paragraph({"synthetic": test}) == []  # no training-split figures


def test_seed_rows_change_only_the_training_seed(results, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "CONFIG_DIR", tmp_path)
    paths = results.write_configs(200, 20, ["full_s2", "ssan_global_s1", "aaipr_no_sc"])
    body = yaml.safe_load(paths["ssan_global_s1"].read_text())
    assert body["seed"] == 1 and body["run_name"] == "ssan_global_s1"
    assert body["losses"] == results.ROWS["ssan_global"][1]["losses"]
    assert yaml.safe_load(paths["full_s2"].read_text())["seed"] == 2
    assert "seed" not in yaml.safe_load(paths["aaipr_no_sc"].read_text())  # not a seed suffix
    assert results.base_row("peta_aaipr_no_sc") == "aaipr_no_sc"


def test_paired_verdict_is_a_t_test_over_seeds(results):
    # mean 5, sd 1 over 3 seeds: half-width 4.303 * 1 / sqrt(3) = 2.48 points
    assert results.paired_verdict([0.05, 0.04, 0.06]) == \
        "**full better** (95 % interval +2.5 .. +7.5)"
    # mean 2, sd 3.606: half-width 8.96 points
    assert results.paired_verdict([0.05, -0.02, 0.03]) == \
        "not decided (95 % interval of the mean -7.0 .. +11.0)"
    assert results.paired_verdict([-0.05, -0.04, -0.06]).startswith("**full worse**")
    assert results.paired_verdict([0.05]) == "one seed: not decided"


def test_the_seeds_section_pairs_each_seed_with_its_own_ablation(results):
    res = {"full": _row(0.30, 0.30, 0.7, attrpred_mAP=0.40),
           "full_s1": _row(0.34, 0.32, 0.7, attrpred_mAP=0.41),
           "ssan_global": _row(0.25, 0.30, 0.7), "ssan_global_s1": _row(0.28, 0.30, 0.7),
           "peta_full": _row(0.1, 0.1, 0.1)}
    text = "\n".join(results.seeds_section(res))
    assert "| full model (SSAN + CR, APR, CMAAM L_MLC, AAIPR) | 0, 1 | 32.0 ± 2.8 |" in text
    # differences +5 and +6: mean 5.5, sd 0.707, half-width 12.706 * 0.5 = 6.35
    assert ("- full vs global only, text R@1: per seed +5.0, +6.0 points; "
            "not decided (95 % interval of the mean -0.9 .. +11.9)") in text
    # -10 and -9: mean -9.5, half-width 6.35
    assert ("- full vs attribute prediction, attr mAP: per seed -10.0, -9.0 points; "
            "**full worse** (95 % interval -15.9 .. -3.1)") in text
    assert "without adversary" not in text  # no such rows: no line
    assert results.seeds_section({"full": _row(0.3, 0.3, 0.7)}) == []


def test_lambda_g_rows_change_only_the_generators_adversarial_weight(results, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(results, "CONFIG_DIR", tmp_path)
    paths = results.write_configs(200, 20, ["aaipr_lambda_g_1e-1_s2"])
    body = yaml.safe_load(paths["aaipr_lambda_g_1e-1_s2"].read_text())
    assert body["losses"] == {"aaipr_generator": {"params": {"lambda_g": 0.1}}}
    assert body["seed"] == 2


def test_the_lambda_g_sweep_pairs_each_weight_with_the_run_without_adversary(results,
                                                                             tmp_path):
    res = {"full": _row(0.3, 0.30, 0.7), "full_s1": _row(0.3, 0.32, 0.7),
           "aaipr_no_adv": _row(0.3, 0.31, 0.7), "aaipr_no_adv_s1": _row(0.3, 0.33, 0.7),
           "aaipr_lambda_g_1": _row(0.3, 0.21, 0.7), "aaipr_lambda_g_1_s1": _row(0.3, 0.22, 0.7)}
    text = "\n".join(results.lambda_g_section(res))
    # 0 (no adversary) first, then 0.001 (the full model), then the sweep; mean ± sd
    assert text.index("| 0 (without adversary) | 0, 1 | 32.0 ± 1.4 |") < \
        text.index("| 0.001 (paper, full) | 0, 1 | 31.0 ± 1.4 |") < text.index("| 1 | 0, 1 |")
    # -10 and -11 points: mean -10.5, sd 0.707, half-width 12.706 * 0.5 = 6.35
    assert ("- lambda_G = 1 vs without adversary, attr mAP: per seed -10.0, -11.0 points; "
            "**lambda_G = 1 worse** (95 % interval -16.9 .. -4.1).") in text
    assert "lambda_G = 0 vs" not in text
    assert ("- **No weight tried makes the adversary help here** (the paper: +6.4 R@1 on Market "
            "at 0.001); it clearly hurts at lambda_G = 0.001, 1. This disagrees") in text
    png = results.plot_lambda_g(res, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no sweep rows: neither section nor picture
    assert results.lambda_g_section({"full": res["full"]}) == []
    assert results.plot_lambda_g({"full": res["full"]}, tmp_path / "none.png") is None


def test_the_cmaam_table_shows_la_beside_l_from_the_same_run(results):
    res = {"full": _row(0.30, 0.3, 0.7, **{"textla_R@1": 0.36, "textla_mAP": 0.33}),
           "cmaam_no_mlc": _row(0.31, 0.3, 0.7)}
    text = results.render(res, 200, 20, 12.0)
    assert "| + L_MLC, LA (Eq. 19) | 36.0 | 33.0 |" in text
    assert "LA vs L of the same run: R@1 30.0 -> 36.0, mAP 30.0 -> 33.0;" in text
    # a run from before LA was measured shows dashes, not the L figures
    old = results.render({"full": _row(0.30, 0.3, 0.7)}, 200, 20, 12.0)
    assert "| + L_MLC, LA (Eq. 19) | – | – |" in old
    assert "LA vs L of the same run" not in old


def test_grad_norms_are_medians_before_and_after_the_first_steps(results, tmp_path):
    import json

    history = tmp_path / "metrics.jsonl"
    entries = [{"step": s, "grad_norm": g} for s, g in
               ((5, 900.0), (10, 100.0), (40, 300.0), (45, 20.0), (50, 10.0), (55, 30.0))]
    entries.insert(2, {"epoch": 1, "val/score": 0.3})  # epoch lines carry no gradient norm
    history.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    assert results.grad_norms(history) == {"grad_norm_early": 300.0, "grad_norm_late": 20.0}
    assert results.grad_norms(tmp_path / "missing.jsonl") == {}


def test_the_cmaam_terms_table_shows_each_rows_seeds_and_gradients(results):
    def row(text, la, image, attrsoft, **extra):
        return _row(text, 0.3, image, **{"textla_R@1": la, "textla_mAP": la + 0.01,
                                         "attrsoft_mAP": attrsoft}, **extra)

    res = {"full": row(0.35, 0.33, 0.7, 0.5, grad_norm_early=18.0, grad_norm_late=16.0),
           "full_s1": row(0.37, 0.35, 0.7, 0.5),
           "cmaam_coral": row(0.28, 0.29, 0.6, 0.3, grad_norm_early=150.0, grad_norm_late=17.0)}
    text = "\n".join(results.cmaam_terms_section(res))
    assert "| L_MLC (the full model) | 2 | 36.0 ± 1.4 | 34.0 ± 1.4 |" in text
    assert "| L_MLC + CORAL | 1 | 28.0 | 29.0 | 30.0 | 30.0 | 60.0 | 150 | 17 |" in text
    assert results.cmaam_terms_section({"full": res["full"]}) == []


def test_named_rows_bring_their_seed_rows_along(results):
    # a repeated row named with --seeds 3 runs seeds 0, 1, 2; a row outside the repeated set
    # runs once; a seed row named as well is not run twice
    rows = results.rows_to_run(["full", "vitaa_align", "full_s2"], 3, peta=False)
    assert rows == ["full", "vitaa_align", "full_s2", "full_s1"]
    assert results.rows_to_run(["peta_full"], 5, peta=True) == ["peta_full"]


def test_the_default_run_trains_seed_zero_of_every_row_before_any_other_seed(results):
    rows = results.rows_to_run(None, 2, peta=True)
    first_seed = rows.index(results.seeded(results.REPEATED_ROWS[0], 1))
    assert set(rows[:first_seed]) == set(results.ROWS)
    assert rows[-len(results.PETA_ORDER):] == [results.PETA_PREFIX + r
                                               for r in results.PETA_ORDER]
    assert len(rows) == len(results.ROWS) + len(results.REPEATED_ROWS) + len(results.PETA_ORDER)


def test_the_shipped_recipe_is_the_packaged_config_that_learns_the_same(results):
    from training.config import load_train_config

    tiny = load_train_config("tiny.yaml").learning_dump()
    assert results.recipe_of(tiny) == "training/configs/tiny.yaml"
    # a field added after the bundle was made is read at its default
    del tiny["model"]["attr_classifier"]
    assert results.recipe_of(tiny) == "training/configs/tiny.yaml"
    tiny["epochs"] += 1
    assert results.recipe_of(tiny) is None
    assert results.recipe_of(None) is None


def test_the_shipped_section_says_how_its_text_queries_are_served(results):
    test = _row(0.4, 0.3, 0.6, images=500.0, ids=160.0, **{
        "textla_R@1": 0.45, "textla_mAP": 0.5, "textpred_R@1": 0.35, "textpred_mAP": 0.4})
    shipped = {"version": "v1", "recipe": "training/configs/default.yaml", "peta": test,
               "validation": {"text_mAP": 0.46, "textla_mAP": 0.47}}
    text = " ".join(results.shipped_section(shipped))
    assert "trained by `pedsearch train --config training/configs/default.yaml`" in text
    assert "mAP 47.0 against 46.0 by the cosine), so the gateway serves its text queries by LA" \
        in text
    assert "| peta | 500 / 160 | 0.6 | 40.0 |" in text
    assert "| 45.0 | 50.0 | 35.0 | 40.0 |" in text  # LA, then attribute prediction
    shipped.update(recipe=None, validation={"text_mAP": 0.5, "textla_mAP": 0.4})
    text = " ".join(results.shipped_section(shipped))
    assert "no longer among `training/configs/`" in text
    assert "serves its text queries by the cosine alone (w = 0)" in text


def test_the_baselines_paragraph_says_what_each_interval_decides(results):
    def diff(metric, base, served, low, high):
        return {"metric": metric, "baseline": base, "candidate": served, "low": low,
                "high": high, "queries": 2000, "clusters": 600,
                "verdict": "better" if low > 0 else "worse" if high < 0 else "not decided"}

    baselines = {"peta": {"images": 2076.0, "ids": 638.0, "differences": [
        diff("text_served vs textpred R@1", 0.197, 0.181, -0.063, 0.032),
        diff("text_served vs textpred mAP", 0.231, 0.245, -0.013, 0.041),
        diff("attrsoft vs attrpred R@1", 0.134, 0.15, -0.014, 0.045),
        diff("attrsoft vs attrpred mAP", 0.178, 0.218, 0.02, 0.06)]},
        "synthetic": {"images": 240.0, "ids": 60.0, "differences": [
            diff("text_served vs textpred R@1", 0.433, 0.702, 0.179, 0.36),
            diff("text_served vs textpred mAP", 0.441, 0.625, 0.133, 0.237)]}}
    text = "\n".join(results.baselines_paragraph(baselines))
    assert ("| peta | 2076 / 638 | text_served vs textpred R@1 | 19.7 | 18.1 | -1.6 [-6.3, +3.2] "
            "| 2000 / 600 | not decided |") in text
    assert "- synthetic, text queries: the model as served clearly beats it (R@1 and mAP)." in text
    assert "- peta, text queries: the model as served cannot be told from it" in text
    assert "- peta, attribute queries: the model as served beats it on one of R@1 / mAP" in text
    assert results.baselines_paragraph({}) == []
