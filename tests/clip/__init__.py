"""Tests of service.clip: model config, tokenizer, preprocessing, encoders."""
