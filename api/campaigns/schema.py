"""The campaign document the admin API accepts, validated field by field (pydantic).

Checks that need the running platform (IQL against the catalog schema, the goal against the
configured event types) happen in ``api/campaigns/endpoints.py`` when the campaign is saved.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api.iql.evaluate import param_control_char
from api.strategies import STRATEGY_NEEDS
from state.campaigns import Arm, BanditConfig, Campaign

__all__ = ["ID_PATTERN", "MAX_SEGMENTS", "PRIOR_MAX", "PRIOR_MIN", "ArmIn", "OptimizerIn", "CampaignIn", "StrategyName", "FallbackName"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SEGMENTS = 100
"""Segments a campaign may declare: with segment '' the optimizer keeps at most 101 per (campaign, arm)."""
PRIOR_MIN, PRIOR_MAX = 1e-3, 1e6
"""Bounds of ``optimizer.prior_alpha`` / ``prior_beta``: below ~1e-3 a Beta draw underflows to 0 (every arm ties)."""

StrategyName = Literal["personalized", "session", "similar", "visual", "cart", "top", "last_seen", "popular"]
FallbackName = Literal["popular", "top"]
_ParamText = Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"})]
"""A parameter's text: the schema says what ``_param_shape`` refuses (control characters, Unicode category Cc)."""
Scalar = _ParamText | int | float | bool


def _param_shape(value: Any) -> Any:
    """Refuse, with one clear message, a parameter that is neither a scalar nor a list of scalars, or that holds
    a control character (as a request's ``$param`` may not: ``api/recommendations.py``).

    Without it pydantic reports each member of the union it tried (``params.p.str: Input should be a
    valid string``) for an object, a null or a nested list.
    """
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str | int | float | bool):
            kind = {dict: "an object", list: "a nested list", type(None): "null"}.get(type(item), type(item).__name__)
            raise PydanticCustomError("param_value", "must be a string, number or boolean, or a list of those "
                                      "(an IQL $param is bound to one value or a list); got {kind}", {"kind": kind})
    bad = param_control_char(value)
    if bad is not None:
        raise PydanticCustomError("param_value", "must not hold control characters (Unicode category Cc); found {char}",
                                  {"char": bad})
    return value


ParamValue = Annotated[Scalar | Annotated[list[Scalar], Field(max_length=1000)], BeforeValidator(_param_shape)]
"""A campaign or arm parameter: one value or a list (an IQL ``$param`` used with IN / ANY / ALL)."""

assert set(STRATEGY_NEEDS) == set(StrategyName.__args__), "StrategyName must list every strategy"  # type: ignore[attr-defined]


class ArmIn(BaseModel, extra="forbid"):
    """One arm: a name unique in the campaign, a strategy, and its parameters."""

    name: str = Field(pattern=ID_PATTERN, json_schema_extra={"not": {"const": "control"}},
                      description="Arm name, unique within the campaign; 'control' is the control group's")
    strategy: StrategyName
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=32,
                                          description="Strategy parameters, e.g. {'window': '24h', 'category': 'shoes'}")


class OptimizerIn(BaseModel, extra="forbid"):
    """Thompson-sampling knobs (see api/optimizer.py)."""

    prior_alpha: float = Field(strict=True, default=1.0, ge=PRIOR_MIN, le=PRIOR_MAX,
                               description="Beta prior alpha, in [0.001, 1e6]; (1, 1) is uniform")
    prior_beta: float = Field(strict=True, default=1.0, ge=PRIOR_MIN, le=PRIOR_MAX,
                              description="Beta prior beta, in [0.001, 1e6]")
    floor: float = Field(strict=True, default=0.0, ge=0, le=1, description="Minimum traffic share per arm")
    half_life_s: float | None = Field(strict=True, default=None, gt=0, le=1e9, description="Evidence half-life (drift); none = keep all")
    segment_param: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                                      description="Request parameter whose value selects the optimizer segment")
    segments: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=MAX_SEGMENTS, description=(
            "The values of segment_param the optimizer learns apart (at most 100); a request with any other "
            "value, or none, counts for the campaign's global arm statistics (segment '')"))


class CampaignIn(BaseModel, extra="forbid"):
    """A campaign as sent to ``POST /v1/campaigns`` or ``PUT /v1/campaigns/{campaign_id}``."""

    campaign_id: str | None = Field(default=None, pattern=ID_PATTERN, description="Required for POST; PUT takes it from the path")
    scenario: StrategyName
    arms: list[ArmIn] = Field(default_factory=list, max_length=20, description="Default: one arm running the scenario")
    filter: str = Field(default="", max_length=4000, json_schema_extra={"format": "iql-filter"}, description=(
        "IQL filter (api/iql/LANGUAGE.md; empty = none), checked against the catalog's attributes when saved"))
    boosters: str = Field(default="", max_length=4000, json_schema_extra={"format": "iql-boosters"}, description=(
        "IQL booster clauses, e.g. BOOST 1.5 IF brand == \"Acme\" (empty = none)"))
    n: int = Field(strict=True, default=10, ge=1, le=500)
    goal: str = Field(default="click", pattern=r"^[a-z][a-z0-9_]{0,63}$", description="Goal event type")
    window_s: float = Field(strict=True, default=86400.0, gt=0, le=90 * 86400.0, description="Attribution window after serving, seconds")
    fallback: FallbackName = "popular"
    control_share: float = Field(strict=True, default=0.0, ge=0, lt=1, description="Share of users (by hash) held out on the fallback")
    optimizer: OptimizerIn = Field(default_factory=OptimizerIn)
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=32, description="Parameters for every arm")

    @field_validator("n", mode="before")
    @classmethod
    def _integral(cls, v: Any) -> Any:
        """A JSON number with no fraction is an integer (``10.0``), as JSON Schema says; booleans are not."""
        return int(v) if isinstance(v, float) and v.is_integer() else v

    @model_validator(mode="after")
    def _check(self) -> CampaignIn:
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arms: names must be unique; repeated {dup}")
        if "control" in names:
            raise ValueError("arms: 'control' is reserved for the control group")
        n_arms = max(1, len(self.arms))
        if self.optimizer.floor > 1 / n_arms:  # the same bound as the schema's (floor_bounds)
            raise ValueError(f"optimizer.floor: must be <= 1 / n_arms = {1 / n_arms}; got {self.optimizer.floor}")
        return self

    @classmethod
    def floor_bounds(cls) -> list[dict[str, Any]]:
        """JSON Schema ``if``/``then`` clauses saying ``optimizer.floor <= 1 / len(arms)`` (the ``_check`` rule)."""
        most = cls.model_fields["arms"].metadata[0].max_length
        return [{"if": {"required": ["arms"], "properties": {"arms": {"minItems": k}}},
                 "then": {"properties": {"optimizer": {"properties": {"floor": {"maximum": 1 / k}}}}}}
                for k in range(2, most + 1)]

    def to_campaign(self, campaign_id: str, created_ts: float, now_ts: float, version: int) -> Campaign:
        arms = [Arm(a.name, a.strategy, dict(a.params)) for a in self.arms] or [Arm(self.scenario, self.scenario)]
        o = self.optimizer
        return Campaign(
            campaign_id=campaign_id, scenario=self.scenario, arms=arms, filter=self.filter,
            boosters=self.boosters, n=self.n, goal=self.goal, window_s=self.window_s, fallback=self.fallback,
            control_share=self.control_share,
            optimizer=BanditConfig(o.prior_alpha, o.prior_beta, o.floor, o.half_life_s, o.segment_param,
                                   tuple(dict.fromkeys(o.segments))),
            params=dict(self.params), created_ts=created_ts, updated_ts=now_ts, version=version)
