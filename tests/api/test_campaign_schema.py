"""The campaign document's field bounds (api/campaigns/schema.py): a bad value is a 422 naming the field."""

from __future__ import annotations

import pytest

from api.campaigns.schema import PRIOR_MAX, PRIOR_MIN, CampaignIn
from api.errors import ApiError, validate_params


@pytest.mark.parametrize("field", ["prior_alpha", "prior_beta"])
@pytest.mark.parametrize("value", [1e-320, 1e-4, 0.0, -1.0, 2e6])
def test_optimizer_priors_out_of_range_are_a_422_naming_the_field(field, value):
    # 1e-320 was accepted (only > 0 was checked): Beta draws underflowed to 0 and the first arm always won
    with pytest.raises(ApiError) as info:
        validate_params(CampaignIn, {"scenario": "popular", "optimizer": {field: value}})
    assert (info.value.status, info.value.field) == (422, f"optimizer.{field}")


@pytest.mark.parametrize("value", [PRIOR_MIN, 1.0, PRIOR_MAX])
def test_optimizer_priors_in_range_are_kept(value):
    c = validate_params(CampaignIn, {"scenario": "popular", "optimizer": {"prior_alpha": value, "prior_beta": value}})
    assert (c.optimizer.prior_alpha, c.optimizer.prior_beta) == (value, value)
