"""Named zero-shot label sets (class names and prompt templates) bundled with clipserve.

``data/labelsets.json`` holds facts from the CLIP paper: ``imagenet`` (1000 classes, 80 templates,
from OpenAI's ImageNet prompt-engineering notebook), ``cifar10`` and ``cifar100`` (18 templates each,
from OpenAI's ``data/prompts.md``).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import NamedTuple

from service.errors import NotFound


class LabelSet(NamedTuple):
    """Class names and the templates (each with ``{}`` for the class name) that embed them."""

    classes: tuple[str, ...]
    templates: tuple[str, ...]


@functools.cache
def _label_sets() -> dict[str, LabelSet]:
    raw = json.loads(resources.files("service.clip").joinpath("data/labelsets.json").read_text("utf-8"))
    return {
        name: LabelSet(tuple(entry["classes"]), tuple(entry["templates"])) for name, entry in raw.items()
    }


def label_set_names() -> list[str]:
    """The names of the bundled label sets, sorted."""
    return sorted(_label_sets())


def get_label_set(name: str) -> LabelSet:
    """The bundled label set ``name``; NotFound (naming the known sets) for anything else."""
    found = _label_sets().get(name)
    if found is None:
        raise NotFound(f"unknown label set {name!r}; known label sets: {', '.join(label_set_names())}")
    return found
