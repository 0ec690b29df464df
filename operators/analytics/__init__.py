"""Campaign analytics: the per-user join of served lists with feedback, its exactly-once apply, the topic, uplift.

Modules (import them directly; this file imports nothing, so ``import operators.analytics`` is cheap):

* ``join``    — pure join of one user's served lists with impressions, clicks, carts, orders -> increments;
* ``apply``   — stage a partition's batch of messages into the analytics database (exactly once);
* ``topic``   — records of the compacted ``analytics`` topic (absolute rows, keyed by partition);
* ``uplift``  — relative uplift of exposed over control users with a confidence interval;
* ``explain`` — why an item was recommended: per-history-item or per-modality contributions.
"""
