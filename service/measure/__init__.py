"""Measuring libraries behind ``clipserve eval`` (zero-shot accuracy) and ``clipserve bench`` (serving).

``model.ServingModel`` builds a model the way the server does; ``accuracy`` and ``serving`` measure it.
"""
