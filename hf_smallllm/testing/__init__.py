"""Harnesses, not the product: what tests, benchmarks and the offline demo run the product against.

- `hub_server`: a Hub-protocol server on the local machine (the real `huggingface_hub` client talks to it), so
  publishing, snapshots and downloads are tested, and the demo publishes, with no network.
- `gpu_check`: the one-run verification of the GPU-only paths (attention backends, bitsandbytes, MFU, decode,
  FSDP2 save and resume), run on a lent GPU machine (`benchmarks/gpu_check.py`).

Nothing in the product imports this package; it ships in the wheel so that an installed package can be checked
(`python -m hf_smallllm.testing.gpu_check`) and the demo can run offline.
"""
