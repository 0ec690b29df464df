"""The model registry: name -> recommender class and the hyper-parameters ``fusionrec eval`` uses.

Adding a model is one line in ``REGISTRY``. Classes are named as ``"module:Class"`` and imported
only when created, so a registry entry costs nothing (no torch import) until it is used.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from models.base import Recommender

__all__ = ["ModelSpec", "REGISTRY", "create_model", "model_names"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a recommender lives and the parameters it is evaluated with by default.

    Attributes
    ----------
    target : str
        ``"package.module:ClassName"``.
    params : mapping of str to object
        Keyword arguments for the constructor.
    """

    target: str
    params: Mapping[str, object] = field(default_factory=dict)


REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({
    "pop": ModelSpec("models.popularity:Popularity"),
    "covisit": ModelSpec("models.covisit:CoVisitation"),
    "itemknn": ModelSpec("models.itemknn:ItemKNN"),
    # session-rec conf/example_next.yml: sknn {k: 100, sample_size: 500, similarity: cosine}
    "sknn": ModelSpec("models.sknn:SKNN", {"k": 100, "sample_size": 500, "similarity": "cosine"}),
    # session-rec conf/example_next.yml: vsknn {k: 500, sample_size: 5000, weighting: quadratic,
    # weighting_score: div, idf_weighting: 5}
    "vsknn": ModelSpec("models.sknn:VSKNN", {"k": 500, "sample_size": 5000, "weighting": "quadratic",
                                             "weighting_score": "div", "idf_weighting": 5.0}),
    "stan": ModelSpec("models.stan:STAN", {"k": 500, "sample_size": 5000}),
    "vstan": ModelSpec("models.stan:VSTAN", {"k": 500, "sample_size": 5000}),
    # the configuration the session datasets picked on validation (bench/RESULTS.md, EMDE, quiet-machine
    # runs): the last item expanded to its co-occurrence neighbours as a third input view, and 8x128
    # random codes per item next to the Cleora modalities; whole epochs (no wall-clock cap)
    "emde": ModelSpec("models.emde:EMDE", {
        "epochs": 3, "views": ("session", "last", "knn:last"),
        "modalities": "g=sessions:16x128:3,s=transitions:16x128:2:in,r=random:8x128"}),
    # EMDE and V-STAN/STAN fused by a LambdaMART ranker fitted on the latest 10 % of training sessions
    "fusion": ModelSpec("models.hybrid:SessionFusion"),
    # user top-N (returning customers): EASE, and EMDE trained to predict a user's future (bench/emde.py)
    "ease": ModelSpec("models.ease:EASE", {"lambda_": 500.0}),
    "emde_user": ModelSpec("models.emde:EMDE", {
        "modalities": "g=sessions:16x128:3,r=random:8x128", "views": ("session", "knn:session"),
        "objective": "future", "time_unit": "seconds", "alpha": 1.0, "n_cuts": 8, "max_prefix": 200,
        "hidden": 512, "epochs": 10, "lr": 2e-3, "batch_size": 256}),
    # SLIST (Choi et al. 2021): closed-form item-item weights from session co-occurrence and transitions
    "slist": ModelSpec("models.slist:SLIST"),
    # GRU4Rec (Hidasi et al.) with Hidasi & Czapp 2023's settings: tied embedding, sampled softmax + logQ
    "gru4rec": ModelSpec("models.gru4rec:GRU4Rec"),
    # SASRec-style self-attention over the prefix (Kang & McAuley 2018), trained and scored as GRU4Rec
    "sasrec": ModelSpec("models.sasrec:SASRec"),
    # GRU4Rec and SASRec networks from consecutive seeds, scored by their mean logit (models/seq_ensemble.py)
    "seq_ensemble": ModelSpec("models.seq_ensemble:SequenceEnsemble"),
    # whichever of its candidates wins validation on the log it is fitted on (models/router.py)
    "router": ModelSpec("models.router:ValidationRouter"),
})
"""Name -> spec; the names ``fusionrec eval --models`` accepts."""


def model_names() -> list[str]:
    """Registered names in registry order."""
    return list(REGISTRY)


def model_class(name: str) -> type[Recommender]:
    """The recommender class registered as ``name`` (imported on first use; e.g. to ``load`` a saved one).

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the names).
    """
    if name not in REGISTRY:
        raise ValueError(f"models: unknown model {name!r}; registered: {', '.join(REGISTRY)}")
    module_name, cls_name = REGISTRY[name].target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def create_model(name: str, **overrides: object) -> Recommender:
    """A new, unfitted recommender: ``REGISTRY[name]`` with ``overrides`` on top of its parameters.

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the names).
        Also if an override is not a constructor parameter, has the wrong type or fails the
        model's parameter checks (the message names the model and the parameter).
    """
    cls = model_class(name)
    _check_override_types(name, cls, overrides)
    try:
        model = cls(**{**dict(REGISTRY[name].params), **overrides})
        validate = getattr(model, "_validate", None)  # the checks fit would make, before any data is read
        if callable(validate):
            validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: bad hyper-parameter in {sorted(overrides)} ({exc})") from exc
    return model


def _check_override_types(name: str, cls: type, overrides: Mapping[str, object]) -> None:
    """An override whose constructor default is a bool, int, float or str must be one too (an int
    for a float, never NaN; an int within 64 bits; None only where the annotation allows it), so ``k="abc"`` fails
    here, naming the parameter, not deep inside ``fit``."""
    params = inspect.signature(cls.__init__).parameters
    for key, value in overrides.items():
        p = params.get(key)
        if p is None or p.default is inspect.Parameter.empty:
            continue  # unknown names: the constructor's TypeError says so
        default = REGISTRY[name].params.get(key, p.default)
        kind = type(default)
        ann = p.annotation
        if kind not in (bool, int, float, str) or (
                ann is not inspect.Parameter.empty and str(ann).replace(" | None", "") != kind.__name__):
            continue  # e.g. ``str | Sequence[...]``: the constructor checks it
        if value is None:
            ok = "None" in str(p.annotation)
        elif kind is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if ok and value != value:  # NaN: no model reads it as a setting (each bound check passes it silently)
                raise ValueError(f"{name}.{key}: expected a number; got NaN")
        elif kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if ok and not -2**63 <= int(value) < 2**63:  # numpy and torch would fail on it deep inside fit
                raise ValueError(f"{name}.{key}: expected an int of at most 64 bits; got {value!r}")
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ValueError(f"{name}.{key}: expected {'a number' if kind is float else kind.__name__}; got {value!r}")
