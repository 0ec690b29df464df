"""``GET /v1/recommendations``: a user's published top-N, or popular items for unknown users."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.errors import validate_params
from api.json import json_response
from api.services import Services
from operators.score import TopN

__all__ = ["RecommendationParams", "get_recommendations"]


class RecommendationParams(BaseModel, extra="allow"):
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    n: int = Field(default=20, ge=1, le=500)


async def get_recommendations(request: Request) -> Response:
    """Response: ``{"request_id", "user_id", "items": [{"item_id", "score"}], "source", "model_version", ...}``.

    ``source`` is ``model`` / ``model+popular`` for a user with a published list, ``popular``
    for a user the stream has not seen (the fallback).
    """
    svc: Services = request.app.state.services
    p = validate_params(RecommendationParams, dict(request.query_params))
    t = svc.topn.get(p.user_id) if p.user_id else None
    if isinstance(t, TopN):
        items = [{"item_id": i, "score": s} for i, s in zip(t.items[: p.n], t.scores[: p.n])]
        body = {"source": t.source, "model_version": t.model_version, "updated_ts": t.updated_ts,
                "last_event_ts": t.last_event_ts}
    else:
        items = [{"item_id": i, "score": s} for i, s in svc.popular(p.n)]
        body = {"source": "popular", "model_version": None}
    svc.metrics.recs_source.labels(body["source"]).inc()
    return json_response({"request_id": uuid.uuid4().hex, "user_id": p.user_id, "items": items, **body})
