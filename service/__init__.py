"""clipserve: a production server for CLIP models (embeddings, similarity, zero-shot labels)."""

__version__ = "0.1.0"
