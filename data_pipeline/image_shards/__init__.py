"""Image shards (docs/data.md, "Image shards"): sources -> `srdd shards` -> WebDataset tars of encoded
images, and the loader that decodes them with VAR's preprocessing.

``sources`` lists inputs, ``decode`` decodes/preprocesses images, ``write`` is `srdd shards`,
``loader`` streams (img_B3HW, label_B) batches."""
