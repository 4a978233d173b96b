"""Records with a schema: codec, MLP backbone, per-feature likelihood (see `kind`)."""
