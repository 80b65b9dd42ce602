"""The one engine core that REST and gRPC both call.

Validation, limits, the class-embedding cache and metrics live here once. Front ends translate
their wire format into these calls and map ``ClipServeError`` kinds to their own statuses.

Life cycle: ``start()`` loads, warms up and checks every configured model, then the engine is
ready; ``begin_drain()`` turns it unready and refuses new calls (Unavailable) while calls already
in flight finish (``wait_idle``); ``stop()`` drains the batchers and releases the models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager

import numpy as np

from service.clip import zeroshot
from service.clip.model_config import resolve_model
from service.config import Settings
from service.engine.admission import Admission
from service.engine.fetch import ImageFetcher
from service.engine.served_model import ServedModel, close_backend_threads, start_backend_threads
from service.engine.tasks import gather_or_cancel, remaining
from service.engine.types import (
    ClassifyResult,
    EmbedResult,
    Image,
    ImageItem,
    ImageUrl,
    Item,
    LabelScore,
    SimilarityResult,
    TextItem,
)
from service.engine.zeroshot import ClassEmbeddings
from service.errors import ClipServeError, DeadlineExceeded, InvalidInput, NotFound, Unavailable
from service.logs import REQUEST
from service.metrics import Metrics
from service.protocol.model_info import ModelInfo
from service.runtime.factory import backend_loaders
from service.runtime.onnx_cache import choose_backend

log = logging.getLogger(__name__)


class Engine:
    """Validates requests, preprocesses off the event loop, batches, and runs the models."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._models: dict[str, ServedModel] = {}  # by served name and by the configured name
        self._served: list[ServedModel] = []  # in configured order; the first is the default
        self._state = "new"  # new -> starting -> ready -> draining -> stopped
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="clipserve-preprocess")
        self.class_embeddings = ClassEmbeddings(settings, metrics)
        self.admission = Admission(settings, metrics)
        self.fetcher = ImageFetcher(settings, metrics)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm up the configured models; afterwards ``ready`` is True."""
        if self._state != "new":
            raise RuntimeError(f"engine cannot start from state {self._state!r}")
        self._state = "starting"
        names = self.settings.model_names()
        if not names:
            raise ValueError("no model configured (settings.model is empty)")
        for name in names:
            served = await self._load(name)
            self._served.append(served)
            self._models[name] = self._models[served.name] = served
        self._state = "ready"
        self.metrics.ready.set(1)
        log.info("ready: serving %s", ", ".join(s.name for s in self._served))

    async def _load(self, name: str) -> ServedModel:
        """Resolve, load (in a thread), warm up and start one model."""
        config = resolve_model(name, self.settings.model_dir)
        begin = time.perf_counter()
        choice = await asyncio.to_thread(choose_backend, config, self.settings)  # may export it (once, cached)
        config = choice.config
        loaders = backend_loaders(config, self.settings)
        threads = await asyncio.to_thread(start_backend_threads, loaders, f"clipserve-{config.name}")
        try:
            served = ServedModel(config, threads, self.settings, self.metrics, choice.reason)
        except BaseException:
            close_backend_threads(threads, config.name)
            raise
        self.metrics.model_load.labels(model=served.name).set(time.perf_counter() - begin)
        try:
            if self.settings.warmup:
                seconds = await asyncio.to_thread(served.warmup)
                self.metrics.model_warmup.labels(model=served.name).set(seconds)
            await served.start()
        except BaseException:
            await served.stop(0)
            raise
        info = served.info
        log.info(
            "model %s loaded: backend=%s (%s) device=%s precision=%s dimension=%d in %.2fs", served.name,
            info.backend, info.backend_reason, info.device, info.precision, info.dimension, time.perf_counter() - begin,
        )
        return served

    @property
    def ready(self) -> bool:
        """True when every model is loaded, warm and its workers answer, and not draining."""
        return self._state == "ready"

    @property
    def draining(self) -> bool:
        """True once ``begin_drain`` or ``stop`` was called."""
        return self._state in ("draining", "stopped")

    @property
    def in_flight(self) -> int:
        """Engine calls being served now, all protocols together."""
        return self._in_flight

    def begin_drain(self) -> None:
        """Turn unready and refuse new calls; calls in flight go on."""
        if self._state != "stopped":
            self._state = "draining"
        self.metrics.ready.set(0)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is in flight, at most ``timeout_s``; True when idle."""
        if self._in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Turn unready, refuse new work, finish queued work (bounded), release the models."""
        if self._state == "stopped":
            return
        self.begin_drain()
        deadline = time.monotonic() + drain_timeout_s
        if not await self.wait_idle(drain_timeout_s):
            log.warning("drain timeout: %d call(s) still in flight", self._in_flight)
        await self.class_embeddings.cancel_pending()
        left = max(0.0, deadline - time.monotonic())
        await asyncio.gather(*(served.stop(left) for served in self._served))
        self._pool.shutdown(wait=False, cancel_futures=True)

        self._state = "stopped"
        log.info("engine stopped")

    def models(self) -> list[ModelInfo]:
        """The served models; the first is the default."""
        return [served.info for served in self._served]

    def count_tokens(self, texts: Sequence[str], model: str | None = None) -> list[int]:
        """Tokens per text as ``model``'s tokenizer makes them: start and end tokens included, at most
        the context length (what the model reads). Tokenizes again (cached): call after ``embed``."""
        served = self._model(model)
        return [served.tokenizer.count(text) for text in texts]

    # -- calls --------------------------------------------------------------------------------

    async def embed(
        self, items: Sequence[Item], model: str | None = None, timeout_s: float | None = None,
        protocol: str = "rest", field: str = "inputs",
    ) -> EmbedResult:
        """Embed texts and images (mixed allowed); rows in input order. ``field`` names the items in errors."""
        async with self._call("embed", protocol):
            served = self._model(model)
            deadline = self._deadline(timeout_s)
            self._check_count(items, field)
            items = await self.fetcher.fetch_items(items, field, deadline)  # before admission: see fetch.py
            with self._admit(served, items):
                rows = await self._embed_items(served, items, field, deadline)
            return EmbedResult(served.name, rows)

    async def classify(
        self,
        images: Sequence[Image],
        *,
        labels: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        label_set: str | None = None,
        top_k: int = 5,
        logits: bool = False,
        model: str | None = None,
        timeout_s: float | None = None,
        protocol: str = "rest",
        field: str = "images",
    ) -> ClassifyResult:
        """Zero-shot classification of each image against labels (or a named label set).

        Scores are the model's probabilities: a softmax over all labels (CLIP), or per label
        ``sigmoid(logit_scale x cosine + logit_bias)`` (SigLIP); ``logits``: the logits instead;
        each result holds the ``top_k`` best labels (at most as many as there are labels). ``field`` names
        the images in errors.
        """
        async with self._call("classify", protocol):
            served = self._model(model)
            deadline = self._deadline(timeout_s)
            self._check_count(images, field)
            names, templates_used = self.class_embeddings.resolve(labels, templates, label_set)
            if top_k < 1:
                raise InvalidInput(f"top_k must be at least 1, got {top_k}")
            wanted = [data if isinstance(data, ImageUrl) else ImageItem(data) for data in images]
            image_items = await self.fetcher.fetch_items(wanted, field, deadline)
            with self._admit(served, image_items):
                class_rows, image_rows = await gather_or_cancel(
                    self.class_embeddings.get(served, names, templates_used, deadline),
                    self._embed_items(served, image_items, field, deadline),
                )
            info = served.info
            order, scores = zeroshot.classify(image_rows, class_rows, info.logit_scale, top_k, logits,
                                              info.scoring, info.logit_bias)
            results = [
                [LabelScore(names[j], float(score)) for j, score in zip(row_order, row_scores, strict=True)]
                for row_order, row_scores in zip(order, scores, strict=True)
            ]
            return ClassifyResult(served.name, results)

    async def similarity(
        self, left: Sequence[Item], right: Sequence[Item], model: str | None = None,
        timeout_s: float | None = None, protocol: str = "rest",
    ) -> SimilarityResult:
        """Cosine similarity matrix and the model's probabilities (softmax per row, or sigmoid) between two lists."""
        async with self._call("similarity", protocol):
            served = self._model(model)
            deadline = self._deadline(timeout_s)
            self._check_count(left, "left")
            self._check_count(right, "right")
            left, right = await self._fetch_sides(left, right, deadline)
            with self._admit(served, [*left, *right]):
                left_rows, right_rows = await gather_or_cancel(
                    self._embed_items(served, left, "left", deadline),
                    self._embed_items(served, right, "right", deadline),
                )
            cosine = left_rows @ right_rows.T
            info = served.info
            return SimilarityResult(
                served.name, cosine, zeroshot.probabilities(cosine, info.logit_scale, info.scoring, info.logit_bias)
            )

    # -- helpers ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _call(self, route: str, protocol: str) -> AsyncIterator[None]:
        """Refuse unless ready; count the call in flight, then by route, protocol and status."""
        begin = time.perf_counter()
        status = "200"
        gauge = self.metrics.in_flight.labels(protocol=protocol)
        self._in_flight += 1
        self._idle.clear()
        gauge.inc()
        try:
            if not self.ready:
                raise Unavailable("server is shutting down" if self.draining else "server is not ready yet")
            yield
        except ClipServeError as exc:
            status = str(exc.http_status)
            raise
        except asyncio.CancelledError:
            status = "499"
            raise
        except Exception:
            status = "500"
            log.exception("%s failed", route)
            raise
        finally:
            gauge.dec()
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
            self.metrics.requests.labels(route=route, protocol=protocol, status=status).inc()
            self.metrics.request_duration.labels(route=route, protocol=protocol).observe(time.perf_counter() - begin)
            ctx = REQUEST.get()
            if ctx is not None:
                ctx.counted = True

    async def _fetch_sides(
        self, left: Sequence[Item], right: Sequence[Item], deadline: float
    ) -> tuple[list[Item], list[Item]]:
        """Both sides with their image URLs fetched; one list compared with itself is fetched once."""
        if right is left:
            both = await self.fetcher.fetch_items(left, "left", deadline)
            return both, both
        fetched = await gather_or_cancel(
            self.fetcher.fetch_items(left, "left", deadline), self.fetcher.fetch_items(right, "right", deadline)
        )
        return fetched[0], fetched[1]

    def _admit(self, served: ServedModel, items: Sequence[Item]) -> AbstractContextManager[None]:
        """Hold the items' place in the admission bound (Overloaded, 429, when they don't fit)."""
        images = sum(isinstance(item, ImageItem) for item in items)
        return self.admission.admit(served.name, images=images, texts=len(items) - images)

    def _model(self, name: str | None) -> ServedModel:
        if not name:
            return self._served[0]
        served = self._models.get(name)
        if served is None:
            served_names = ", ".join(repr(s.name) for s in self._served)
            raise NotFound(f"unknown model {name!r}; this server serves {served_names}")
        return served

    def _deadline(self, timeout_s: float | None) -> float:
        limit = self.settings.request_timeout_s
        if timeout_s is not None:
            if not timeout_s > 0:
                raise InvalidInput(f"timeout must be positive, got {timeout_s}")
            limit = min(limit, timeout_s)
        return time.monotonic() + limit

    def _check_count(self, items: Sequence[object], field: str) -> None:
        limit = self.settings.max_items_per_request
        if not items:
            raise InvalidInput(f"{field}: empty list; give at least one item")
        if len(items) > limit:
            raise InvalidInput(f"{field}: {len(items)} items; the limit is {limit} (max_items_per_request)")

    def _tokens(self, served: ServedModel, text: object, where: str) -> list[int]:
        if not isinstance(text, str):
            raise InvalidInput(f"{where}: text must be a string, got {type(text).__name__}")
        limit = self.settings.max_text_chars
        if len(text) > limit:
            raise InvalidInput(f"{where}: text has {len(text)} characters; the limit is {limit} (max_text_chars)")
        try:
            return served.tokenizer.encode(text)
        except Exception as exc:  # not seen in practice (ftfy repairs even lone surrogates): still a 4xx
            raise InvalidInput(f"{where}: cannot tokenize this text: {type(exc).__name__}") from exc

    async def _embed_items(
        self, served: ServedModel, items: Sequence[Item], field: str, deadline: float
    ) -> np.ndarray:
        """Embed mixed items: texts tokenized inline, images preprocessed in the pool; input order."""
        text_at: list[int] = []
        tokens: list[list[int]] = []
        image_at: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, TextItem):
                text_at.append(i)
                tokens.append(self._tokens(served, item.text, f"{field}[{i}]"))
            elif isinstance(item, ImageItem):
                image_at.append(i)
            else:
                raise InvalidInput(f"{field}[{i}]: expected a text or an image, got {type(item).__name__}")
        out = np.empty((len(items), served.info.dimension), dtype=np.float32)

        async def texts() -> None:
            if tokens:
                out[text_at] = await served.texts.submit(tokens, deadline)

        async def images() -> None:
            if image_at:
                datas = [items[i].data for i in image_at]  # type: ignore[union-attr]
                pixels = await self._preprocess(served, datas, [f"{field}[{i}]" for i in image_at], deadline)
                out[image_at] = await served.images.submit(pixels, deadline)

        await gather_or_cancel(texts(), images())
        return out

    async def _preprocess(
        self, served: ServedModel, datas: Sequence[bytes], where: Sequence[str], deadline: float
    ) -> list[np.ndarray]:
        """Decode and preprocess images in the thread pool; the first bad one fails the request."""
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self._pool, served.preprocess, data) for data in datas]
        try:
            done, pending = await asyncio.wait(
                futures, timeout=remaining(deadline), return_when=asyncio.FIRST_EXCEPTION
            )
        finally:  # also on cancellation (the client left): its jobs not started yet leave the pool's queue
            for future in futures:
                future.cancel()
        for future, name in zip(futures, where, strict=True):
            if future in done and future.exception() is not None:
                raise _item_error(future.exception(), name)  # type: ignore[arg-type]
        if pending:
            raise DeadlineExceeded(f"request timed out while preprocessing {len(datas)} image(s)")
        return [future.result() for future in futures]


def _item_error(exc: BaseException, where: str) -> ClipServeError:
    """The error of one item, prefixed with its place (``inputs[3]: ...``)."""
    if isinstance(exc, ClipServeError):
        return type(exc)(f"{where}: {exc.message}", kind=exc.kind, retry_after_s=exc.retry_after_s)
    log.warning("%s: image decoding raised %s: %s", where, type(exc).__name__, exc)
    return InvalidInput(f"{where}: not a valid image: {type(exc).__name__}: {exc}")
