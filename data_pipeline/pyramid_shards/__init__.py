"""Pyramid shards (docs/data.md, "Pyramid shards"): image shards encoded once, offline, into
code pyramids by the frozen tokenizer, and the loader training streams them with.

``format`` is the sample layout (writer and loader share it), ``precompute`` is `srdd pyramids`,
``loader`` streams (label_B, codes per scale) batches."""
