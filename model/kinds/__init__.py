"""Data kinds (tabular, image, sequence); the registry arrives with the model/ layout (issue 11)."""
