"""Analytics in the API: the admin endpoints and the service reading the ``analytics`` topic
(``endpoints``), and the columnar in-memory view of that topic's rows (``view``)."""
