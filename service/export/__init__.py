"""The ONNX export library: a CLIP model's image and text towers to verified ONNX graphs.

``export_model`` writes a model repository entry (``config.json`` + ``onnx/``); ``clipserve export``
(``service.cli.export``) and the on-demand cache (``service.runtime.onnx_cache``) call it.
"""

from service.export.onnx import (
    DEFAULT_OPSET,
    IMAGE_FILE,
    MIN_OPSET,
    ONNX_DIR,
    TEXT_FILE,
    ExportOptions,
    default_name,
    derive,
    export_model,
)

__all__ = [
    "DEFAULT_OPSET", "IMAGE_FILE", "MIN_OPSET", "ONNX_DIR", "TEXT_FILE", "ExportOptions", "default_name", "derive",
    "export_model",
]
