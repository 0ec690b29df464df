"""IQL, the items query language: parser, compiler, bitmap catalogue index, evaluator and boosters.

Typical use in the app::

    index = CatalogIndex.build(items)                  # item dicts; later index.upsert / index.delete
    engine = IQLEngine(index)
    engine.validate_filter(campaign.filter)            # at save time; IQLError -> HTTP 400
    ctx = engine.context(item_id=..., cart_item_ids=..., user={...}, params={...})
    keep = engine.filter_candidates(campaign.filter, ctx, candidate_idx)   # bool mask
    scores = boosted_scores(scores, engine.boost(campaign.boosters, ctx, candidate_idx))  # raises whatever the sign
"""

from api.iql.booster import boosted_scores
from api.iql.context import RequestContext
from api.iql.engine import IQLEngine
from api.iql.errors import CatalogSchemaError, IQLError
from api.iql.evaluate import candidates_mask, evaluate
from api.iql.index import CatalogIndex
from api.iql.parser import IQLParser
from api.iql.plan import BoosterPlan, FilterPlan
from api.iql.schema import AttrType

__all__ = [
    "AttrType",
    "CatalogIndex",
    "CatalogSchemaError",
    "IQLEngine",
    "IQLError",
    "IQLParser",
    "FilterPlan",
    "BoosterPlan",
    "RequestContext",
    "candidates_mask",
    "evaluate",
    "boosted_scores",
]
