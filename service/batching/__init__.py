"""The dynamic batcher: groups items of concurrent requests into batches for the model workers."""

from service.batching.batcher import Batcher, BatcherConfig

__all__ = ["Batcher", "BatcherConfig"]
