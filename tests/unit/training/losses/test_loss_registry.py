"""The LOSSES registry: names, strict configs with paper defaults, bound calls."""

from __future__ import annotations

import pytest
import torch

from pedsearch.errors import ConfigError
from training.losses import LOSSES, BoundLoss
from training.losses.vitaa import alignment_loss


def test_every_paper_has_its_losses_registered():
    names = set(LOSSES.names())
    for required in (
        "identity", "cross_modal_identity", "apr", "apr_attributes", "aaipr_generator",
        "aaipr_discriminator", "cmaam", "cmaam_multilabel", "cmaam_coral",
        "cmaam_semantic_triplet", "cmaam_latent_triplet", "cmaam_norm_regularization",
        "vitaa_alignment", "vitaa_attribute_alignment", "ssan_compound_ranking", "ssan",
    ):
        assert required in names


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_config_is_strict_documented_and_names_its_paper(name):
    model = LOSSES.config_model(name)
    assert model is not None and model.model_config.get("extra") == "forbid"
    paper = name.split("_")[0].upper()
    for field, info in model.model_fields.items():
        assert info.description, f"{name}.{field} has no description"
        if paper in {"APR", "AAIPR", "CMAAM", "VITAA", "SSAN"}:
            assert paper in info.description.upper(), f"{name}.{field} does not name {paper}"
    with pytest.raises(ConfigError, match="bad configuration"):
        LOSSES.build(name, not_a_hyper_parameter=1)


def test_paper_defaults():
    assert LOSSES.build("apr").params["lambda_id"] == 8.0
    assert LOSSES.build("aaipr_generator").params == {"lambda_g": 0.001,
                                                      "semantic_consistency": True}
    assert LOSSES.build("aaipr_discriminator").params == {"lambda_d": 0.5}
    cm = LOSSES.build("cmaam").params
    assert (cm["alpha"], cm["gamma"], cm["m_max"], cm["delta"]) == (2.0, 0.5, 0.3, 0.3)
    assert (cm["lambda_b"], cm["lambda_c"], cm["lambda_reg"], cm["lambda_var"], cm["lambda_t"]) == (
        0.25, 50.0, 1e-3, 1.0, 3.0
    )
    va = LOSSES.build("vitaa_attribute_alignment").params
    assert (va["alpha"], va["beta"], va["tau_p"], va["tau_n"], va["k"]) == (0.6, 0.4, 10.0, 40.0, 8)
    ss = LOSSES.build("ssan").params
    assert (ss["alpha1"], ss["beta"], ss["branch_weights"]) == (0.2, 0.1, (1.0, 0.5, 0.5))


def test_bound_loss_calls_the_pure_function_with_its_hyper_parameters():
    bound = LOSSES.build("vitaa_alignment", tau_n=30.0)
    assert isinstance(bound, BoundLoss) and bound.fn is alignment_loss
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    pos = torch.eye(2, dtype=torch.bool)
    torch.testing.assert_close(bound(v, t, pos), alignment_loss(v, t, pos, tau_n=30.0))
    with pytest.raises(ConfigError, match="configuration"):
        bound(v, t, pos, tau_n=10.0)


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError, match="known: .*vitaa_alignment"):
        LOSSES.build("vitaa_allignment")


def test_out_of_bounds_hyper_parameters_are_config_errors():
    with pytest.raises(ConfigError):
        LOSSES.build("vitaa_alignment", alpha=0.3, beta=0.5)
    with pytest.raises(ConfigError):
        LOSSES.build("cmaam_semantic_triplet", gamma=1.0)
    with pytest.raises(ConfigError):
        LOSSES.build("ssan", branch_weights=[1.0, -0.5])
