"""The HTTP service: FastAPI app, settings, request/response models, metrics. Builds on `model`;
never imports `training` (the server starts from an artifact directory alone)."""
