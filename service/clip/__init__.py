"""CLIP model code: model repository, loading, tokenizer, preprocessing and zero-shot helpers.

This is the lowest layer: it imports nothing from the rest of ``service`` except ``service.errors``.
Modules that need torch import it lazily so that ONNX serving runs without torch installed.
"""
