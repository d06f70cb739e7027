"""Configuration: the model (`model`) and the strict loader that builds it (`loader`)."""
