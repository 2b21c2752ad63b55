"""E5 use cases built on deploy / ingest / search, each working through the cluster on both engines.

- :mod:`~e5plugin.tasks.chunking`: long documents split into passages that fit the model.
- :mod:`~e5plugin.tasks.faq`: FAQ answer retrieval with a confidence score and a "no good answer" result.
- :mod:`~e5plugin.tasks.dedup`: near-duplicate clusters from kNN queries against the index (union-find).
- :mod:`~e5plugin.tasks.calibrate`: a similarity threshold chosen on labelled pairs and stored in the index's
  ``_meta.e5plugin.calibration``, the default threshold of faq and dedup.

Nothing is imported here: each module pulls in only what it needs.
"""
