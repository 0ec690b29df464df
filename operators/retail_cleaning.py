"""The Online Retail cleaning rule for readers outside ``models/`` (the replay reader).

One implementation, in ``models.data.retail_cleaning`` (the training and eval loader uses it
there, and ``models/`` imports nothing of ours); this module re-exports it so ``simulators/``
reaches it through ``operators/``, and builds the rule from the settings.
"""

from __future__ import annotations

from models.data.retail_cleaning import (
    DEFAULT_FEE_PATTERN,
    DEFAULT_NON_PRODUCT_CODES,
    RETAIL_COLUMNS,
    CleaningReport,
    RetailCleaning,
    clean_retail,
    read_retail_table,
)
from operators.settings import RetailCleaningSettings

__all__ = ["DEFAULT_FEE_PATTERN", "DEFAULT_NON_PRODUCT_CODES", "RETAIL_COLUMNS", "CleaningReport", "RetailCleaning",
           "clean_retail", "read_retail_table", "cleaning_rule"]


def cleaning_rule(settings: RetailCleaningSettings) -> RetailCleaning:
    """The rule configured in ``[retail_cleaning]``."""
    return RetailCleaning(non_product_codes=tuple(settings.non_product_codes), fee_pattern=settings.fee_pattern,
                          keep_guests=settings.keep_guests)
