"""EMDE (Dąbrowski et al., arXiv 2006.01894): DLSH codes, additive sketches, sketch network."""

from models.emde.dlsh import DLSHCodebook, fit_dlsh
from models.emde.layout import SketchLayout
from models.emde.modality import ModalitySpec, parse_modalities
from models.emde.recommender import EMDE
from models.emde.sketch import decay_factor, history_sketches, item_columns, set_sketch, update_sketch

__all__ = ["EMDE", "DLSHCodebook", "fit_dlsh", "ModalitySpec", "parse_modalities", "SketchLayout",
           "decay_factor", "history_sketches", "item_columns", "set_sketch", "update_sketch"]
