"""Benchmarks (speed and memory targets, printed as ratios against a reference measured in the same process).

`python -m benchmarks.run` runs the model suite (`hf_smallllm.bench`); other modules here measure one topic each.
"""
