"""Importers: checkpoints other training code writes, mapped onto txtgen-nb's model family.

One module per foreign layout, detected from parameter names and config keys (no flags):

- ``minigpt``: the JAX miniGPT tutorial (NNX state, ``{'params': ...}``, linen trees);
- ``hf``: Hugging Face folders (safetensors), with ``hf_gpt2`` and ``hf_llama`` per architecture;
- ``base``: flat parameter dicts and building the model from one with every shape checked.

``checkpoint.load_run`` tries them; users just pass the folder.
"""
