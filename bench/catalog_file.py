"""Write a seeded catalog JSONL file for ``fusionrec catalog`` (memory and speed measurements).

Each line is one item: ``item_id``, ``title``, ``brand``, ``price``, ``categories``, ``in_stock`` and a
64-float ``vector``; every 50th item has a second line (a new price: the last line wins) and every
1,000th line is a delete. Run: ``.venv/bin/python bench/catalog_file.py /tmp/catalog-100k.jsonl 100000``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson

__all__ = ["write_catalog"]


def write_catalog(path: Path, n_items: int, dim: int = 64, seed: int = 0) -> int:
    """Write ``n_items`` items (plus re-publishes and deletes) to ``path``; returns the number of lines."""
    rng = np.random.default_rng(seed)
    brands = [f"brand-{i}" for i in range(200)]
    lines = 0
    with open(path, "wb") as f:
        for i in range(n_items):
            item = {"item_id": f"item-{i}", "title": f"Item {i} in a catalog of {n_items}",
                    "brand": brands[int(rng.integers(len(brands)))], "price": round(float(rng.uniform(1, 500)), 2),
                    "categories": [f"cat-{int(c)}" for c in rng.integers(0, 40, 2)], "in_stock": bool(rng.random() > .05),
                    "vector": [round(float(x), 5) for x in rng.standard_normal(dim)]}
            f.write(orjson.dumps(item) + b"\n")
            lines += 1
            if i % 50 == 0:
                f.write(orjson.dumps({**item, "price": item["price"] + 1}) + b"\n")
                lines += 1
            if i % 1000 == 999:
                f.write(orjson.dumps({"item_id": f"item-{i - 500}", "deleted": True}) + b"\n")
                lines += 1
    return lines


if __name__ == "__main__":
    print(write_catalog(Path(sys.argv[1]), int(sys.argv[2])), "lines")
