"""Images of one geometry: codec, convolutional backbone, per-pixel likelihood (see `kind`)."""
