"""Benchmarks of the model classes against transformers' own implementations (see `suite.py`)."""
