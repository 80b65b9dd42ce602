"""``clipserve eval``: zero-shot top-1/top-5 accuracy of a CLIP model on a folder-per-class image set.

The image set is a directory or a ``.tar`` laid out as ``<root>/<class>/<image>`` (the class is each
image's parent folder, as in the CIFAR-10 tars). Class names and prompt templates come from a bundled
label set (``service/clip/data/labelsets.json``), picked automatically when the folder names match
one, else the folder names are the class names. The model is built as the server builds it
(``service.measure.model.ServingModel``: ``resolve_model``, ``ensure_onnx``, the backend factory) on
the backend the server would pick (``--backend torch|onnx`` overrides the model's own), images go
through the serving preprocessing (pixel-identical to open_clip's eval transform) and texts through the
serving tokenizer, padded as the server batches them: the figures are what the service delivers on
that backend.

Example::

    clipserve eval clipserve-demo ../shared/datasets/cifar10/test.tar --backend onnx
"""

from __future__ import annotations

import random
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from service.clip.zeroshot import DEFAULT_TEMPLATES, class_embeddings, get_label_set, label_set_names
from service.config import Settings
from service.errors import InvalidInput
from service.measure.model import ServingModel

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class EvalResult:
    """Accuracy figures of one run."""

    model: str
    backend: str  # the runtime that computed the embeddings: torch or onnx
    data: str
    images: int
    classes: int
    templates: int
    label_set: str | None
    top1: float
    top5: float
    seconds: float


def check_source(source: Path) -> None:
    """InvalidInput unless ``source`` is a directory or a tar file."""
    if not source.exists():
        raise InvalidInput(f"image set {source} not found")
    if not source.is_dir() and not tarfile.is_tarfile(source):
        raise InvalidInput(f"{source} is neither a directory nor a tar file")


def list_images(source: Path) -> list[tuple[str, str]]:
    """``(class folder, key)`` of every image in a directory or tar, sorted; key is a path or member name."""
    check_source(source)
    if source.is_dir():
        found = [(p.parent.name, str(p)) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        with tarfile.open(source) as tar:
            found = [
                (PurePosixPath(m.name).parent.name, m.name)
                for m in tar.getmembers()
                if m.isfile() and PurePosixPath(m.name).suffix.lower() in IMAGE_SUFFIXES
            ]
    if not found:
        raise InvalidInput(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {source}")
    return sorted(found)


def balanced_subset(items: Sequence[tuple[str, str]], limit: int, seed: int = 0) -> list[tuple[str, str]]:
    """A fixed, seeded subset of ``limit`` images, as even across classes as the classes allow."""
    by_class: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item in items:
        by_class[item[0]].append(item)
    rng = random.Random(seed)
    queues = []
    for name in sorted(by_class):
        members = sorted(by_class[name])
        rng.shuffle(members)
        queues.append(members)
    chosen: list[tuple[str, str]] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop())
    return sorted(chosen)


def read_images(source: Path, keys: Sequence[str]) -> Iterator[bytes]:
    """The bytes of each key (a file path, or a member of the tar ``source``), in order."""
    if source.is_dir():
        for key in keys:
            yield Path(key).read_bytes()
        return
    with tarfile.open(source) as tar:
        for key in keys:
            member = tar.extractfile(key)
            if member is None:
                raise InvalidInput(f"{source}: {key} is not a regular file")
            yield member.read()


def choose_labels(
    folders: Sequence[str], label_set: str | None, mode: str
) -> tuple[list[str], tuple[str, ...], str | None]:
    """Class names (one per folder, in folder order), templates and the label set used.

    ``label_set`` None picks a bundled set whose classes are exactly the folder names (``_`` read as a
    space). ``mode`` is ``ensemble`` (the set's templates; the default prompt without a set) or
    ``single`` (``"a photo of a {}."``).
    """
    names = [f.replace("_", " ") for f in folders]
    if label_set is None:
        label_set = next((n for n in label_set_names() if set(get_label_set(n).classes) == set(names)), None)
    templates = DEFAULT_TEMPLATES
    if label_set is not None:
        chosen = get_label_set(label_set)
        missing = sorted(set(names) - set(chosen.classes))
        if missing:
            raise InvalidInput(f"folders {missing} are not classes of label set {label_set!r}")
        if mode == "ensemble":
            templates = chosen.templates
    return names, templates, label_set


class ZeroShotEncoder(Protocol):
    """What ``evaluate`` needs of a model (``ServingModel`` is one): a name, a backend, two encoders."""

    @property
    def name(self) -> str:
        """The model's name."""
        ...

    @property
    def backend_name(self) -> str:
        """The runtime that computes the embeddings."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) text embeddings."""
        ...

    def encode_images(self, images: Sequence[bytes]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of encoded image files."""
        ...


def eval_settings(
    backend: str | None = None,
    device: str = "cpu",
    model_dir: Path | None = None,
    threads: int = 0,
    batch_size: int = 256,
) -> Settings:
    """The server settings an evaluation loads its model with (the rest: the server's defaults and environment).

    ``backend`` None keeps the model's own; ``threads`` 0 is the runtime's default; ``batch_size`` is
    also the largest batch a TensorRT shape profile plans for.
    """
    overrides: dict[str, Any] = {"device": device, "inference_threads": threads, "max_batch_size": batch_size}
    if backend is not None:
        overrides["backend"] = backend
    if model_dir is not None:
        overrides["model_dir"] = model_dir
    return Settings(**overrides)


def evaluate_model(
    name: str, data: Path, settings: Settings, label_set: str | None = None, templates: str = "ensemble",
    limit: int | None = None, batch_size: int = 256, seed: int = 0,
) -> EvalResult:
    """Load model ``name`` as the server would with ``settings`` (``ServingModel.load``), evaluate it, free it.

    The image set is checked before the model is loaded (which may export it to ONNX first).
    """
    check_source(data)
    model = ServingModel.load(name, settings)
    try:
        return evaluate(model, data, label_set, templates, limit, batch_size, seed)
    finally:
        model.close()


def evaluate(
    model: ZeroShotEncoder,
    data: Path,
    label_set: str | None = None,
    templates: str = "ensemble",
    limit: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> EvalResult:
    """Zero-shot top-1/top-5 of ``model`` on the image set ``data`` (optionally a balanced subset)."""
    start = time.perf_counter()
    items = list_images(data)
    folders = sorted({c for c, _ in items})
    if limit is not None:
        items = balanced_subset(items, limit, seed)
    names, chosen, used_set = choose_labels(folders, label_set, templates)
    classes = class_embeddings(names, chosen, model.encode_texts)
    targets = np.array([folders.index(c) for c, _ in items])
    k = min(5, len(folders))
    hits1 = hits5 = 0
    stream = read_images(data, [key for _, key in items])
    for i in range(0, len(items), batch_size):
        batch = [next(stream) for _ in range(min(batch_size, len(items) - i))]
        ranked = np.argsort(-(model.encode_images(batch) @ classes.T), axis=1, kind="stable")[:, :k]
        truth = targets[i : i + len(batch), None]
        hits1 += int((ranked[:, :1] == truth).sum())
        hits5 += int((ranked == truth).any(axis=1).sum())
    n = len(items)
    return EvalResult(
        model.name, model.backend_name, str(data), n, len(folders), len(chosen),
        used_set, hits1 / n, hits5 / n, time.perf_counter() - start,
    )
