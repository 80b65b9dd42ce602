"""Image bytes -> normalised CLIP input, pixel-for-pixel as open_clip's eval transform, without torch.

open_clip's reference (``image_transform(size, is_train=False)`` with ``resize_mode='shortest'``) is
torchvision ``Resize(size, BICUBIC)`` -> ``CenterCrop(size)`` -> ``convert('RGB')`` -> ``ToTensor`` ->
``Normalize(mean, std)``; with ``resize_mode='squash'`` (SigLIP's) ``Resize((size, size))`` and the
crop is a no-op. Here the same Pillow calls run in the same order on the image in its
original mode (so Pillow's per-mode rules hold as they do there: ``1`` and ``P`` resize with NEAREST,
``LA``/``RGBA`` resize premultiplied, ``I;16``/``I``/``F`` resize in their own mode and ``convert('RGB')``
clamps them to 0..255, which saturates a full-range 16-bit image exactly as the reference does).
``ToTensor`` + ``Normalize`` become one 256-entry float32 table per channel, computed with the same
float32 operations (``x / 255``, ``- mean``, ``/ std``), so the output is bit-identical
(``tests/clip/test_preprocess.py``).

Where this differs from the reference, on purpose:

* EXIF orientation is applied first (as ``ImageOps.exif_transpose``): phone photos store pixels
  sideways with an orientation tag. Images without the tag are unaffected.
* Animated images (GIF, APNG, WebP, multi-frame TIFF) use their first frame, which is what
  ``Image.open`` shows the reference too.
* Mode ``La`` (greyscale with premultiplied alpha, from some TIFFs), where the reference's
  ``convert('RGB')`` raises, is un-premultiplied to ``LA`` first and then processed as ``LA`` is.
* Optional JPEG draft mode (``draft=True``, off by default): libjpeg decodes at 1/2, 1/4 or 1/8 scale
  while keeping the shortest side >= the target, then the reference resize runs on the exact source
  area (Pillow's draft box). Faster on large photos, not bit-identical: see docs/benchmarks.md.

Decoding is guarded: a size limit in bytes, a pixel limit checked from the header before any pixel
is decoded (also capped by Pillow's own ``Image.MAX_IMAGE_PIXELS`` bomb limit), an allow-list of
formats (no EPS/PDF/ghostscript or rarely used decoders), truncated files are an error, never padded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.clip.model_config import OPENAI_MEAN, OPENAI_STD, ModelConfig
from service.errors import InvalidInput, LimitExceeded

if TYPE_CHECKING:
    from service.config import Settings

Box = tuple[float, float, float, float]

DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "PPM")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_EXIF_ORIENTATION = 0x0112
T = Image.Transpose
# EXIF orientation -> (transpose, where the source box (x0, y0, x1, y1) of a w x h image goes).
_ORIENT = {
    2: (T.FLIP_LEFT_RIGHT, lambda b, w, h: (w - b[2], b[1], w - b[0], b[3])),
    3: (T.ROTATE_180, lambda b, w, h: (w - b[2], h - b[3], w - b[0], h - b[1])),
    4: (T.FLIP_TOP_BOTTOM, lambda b, w, h: (b[0], h - b[3], b[2], h - b[1])),
    5: (T.TRANSPOSE, lambda b, w, h: (b[1], b[0], b[3], b[2])),
    6: (T.ROTATE_270, lambda b, w, h: (h - b[3], b[0], h - b[1], b[2])),
    7: (T.TRANSVERSE, lambda b, w, h: (h - b[3], w - b[2], h - b[1], w - b[0])),
    8: (T.ROTATE_90, lambda b, w, h: (b[1], w - b[2], b[3], w - b[0])),
}


@dataclass(frozen=True)
class PreprocessConfig:
    """What a model expects: square input side, per-channel mean/std, resize filter."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: Literal["shortest", "squash"] = "shortest"  # squash: both sides to the size, no crop (SigLIP)

    @classmethod
    def from_model_config(cls, cfg: ModelConfig) -> PreprocessConfig:
        """The preprocessing values stored with a model."""
        return cls(cfg.image_size, tuple(cfg.mean), tuple(cfg.std), cfg.interpolation,  # type: ignore[arg-type]
                   cfg.resize_mode)

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The resized (width, height): shortest side to the size (then a centre crop), or squashed square."""
        if self.resize_mode == "squash":
            return self.image_size, self.image_size
        return resized_size(width, height, self.image_size)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output (width, height): shortest side -> size, long side floored."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def normalize_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32: ``(v / 255 - mean) / std`` per channel in float32, as ToTensor + Normalize."""
    v = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    return np.ascontiguousarray((v - m) / s, dtype=np.float32)


class ImagePreprocessor:
    """Decode untrusted image bytes and turn them into ``(3, S, S)`` float32 model input.

    Stateless after construction and thread-safe; Pillow releases the GIL while decoding and
    resizing, so a thread pool scales with cores.
    """

    def __init__(
        self,
        config: PreprocessConfig,
        max_pixels: int,
        max_bytes: int | None = None,
        draft: bool = False,
        formats: Sequence[str] = DEFAULT_FORMATS,
    ):
        if config.interpolation not in _RESAMPLE:
            raise ValueError(f"unsupported interpolation {config.interpolation!r}")
        self.config = config
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.draft = draft
        Image.init()
        self.formats = tuple(f for f in formats if f in Image.OPEN)  # Image.open fails on unknown names
        self._resample = _RESAMPLE[config.interpolation]
        self._table = normalize_table(config.mean, config.std)

    @classmethod
    def serving(cls, model: ModelConfig, settings: Settings) -> ImagePreprocessor:
        """The preprocessing the server gives ``model``: its config's, with the settings' image limits."""
        return cls(
            PreprocessConfig.from_model_config(model),
            max_pixels=settings.max_image_pixels,
            max_bytes=settings.max_image_bytes,
            draft=settings.jpeg_draft,
        )

    def __call__(self, data: bytes) -> np.ndarray:
        """Decode and preprocess: ``(3, S, S)`` float32."""
        return self.preprocess(self.decode(data))

    def decode(self, data: bytes) -> Image.Image:
        """Bytes -> a fully loaded, upright PIL image (first frame), or a clear error.

        Raises ``InvalidInput`` (empty, not an image / unsupported format, corrupt or truncated) and
        ``LimitExceeded`` (over ``max_bytes``, or over ``max_pixels`` by the header's size). With
        ``draft`` on, a JPEG comes back already resized to the target's shortest side.
        """
        if not data:
            raise InvalidInput("image is empty (0 bytes)")
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise LimitExceeded(f"image is {len(data)} bytes, over the limit of {self.max_bytes} (max_image_bytes)")
        image = self._open(data)
        size = image.size
        box = self._draft(image) if self.draft else None
        try:
            image.load()
        except Image.DecompressionBombError as e:
            raise LimitExceeded(f"image rejected as a decompression bomb: {e}") from e
        except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError...
            raise InvalidInput(f"cannot decode {image.format} image (corrupt or truncated): {e}") from e
        orientation = _orientation(image)
        if orientation in _ORIENT:
            if box is not None:
                box = _ORIENT[orientation][1](box, *image.size)
            if orientation >= 5:
                size = size[::-1]
            ImageOps.exif_transpose(image, in_place=True)
        if box is not None and image.size != size:  # draft scaled it: resize the exact source area
            image = image.resize(self.config.target(*size), self._resample, box=box)
        return image

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The reference steps on a PIL image: resize shortest side, center crop, RGB, normalise."""
        try:
            return self._preprocess(image)
        except (ValueError, OSError) as e:  # Pillow: a mode it cannot resize or convert
            raise InvalidInput(f"cannot preprocess a mode {image.mode} image: {e}") from e

    def _preprocess(self, image: Image.Image) -> np.ndarray:
        s = self.config.image_size
        if image.mode == "La":  # the reference's convert('RGB') raises for La: un-premultiply, then as LA
            image = image.convert("LA")
        width, height = image.size
        new_size = self.config.target(width, height)
        if new_size != image.size:
            image = image.resize(new_size, self._resample)
        top = round((new_size[1] - s) / 2.0)  # torchvision's CenterCrop (round half to even)
        left = round((new_size[0] - s) / 2.0)
        image = image.crop((left, top, left + s, top + s))
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image)
        out = np.empty((3, s, s), dtype=np.float32)
        for c in range(3):
            np.take(self._table[c], pixels[:, :, c], out=out[c])
        return out

    def stack(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed images -> one contiguous ``(N, 3, S, S)`` float32 batch."""
        s = self.config.image_size
        if not arrays:
            return np.empty((0, 3, s, s), dtype=np.float32)
        return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)

    def _open(self, data: bytes) -> Image.Image:
        """Read the header only, and check the pixel count before anything is decoded."""
        try:
            image = Image.open(io.BytesIO(data), formats=self.formats)
        except Image.DecompressionBombError as e:
            raise LimitExceeded(f"image rejected as a decompression bomb: {e}") from e
        except UnidentifiedImageError as e:
            formats = ", ".join(self.formats)
            raise InvalidInput(f"not an image: unknown format or corrupt header (supported: {formats})") from e
        except Exception as e:
            raise InvalidInput(f"cannot read the image header: {e}") from e
        width, height = image.size
        limit = min(self.max_pixels, Image.MAX_IMAGE_PIXELS or self.max_pixels)
        if width * height > limit:
            raise LimitExceeded(
                f"image is {width}x{height} = {width * height} pixels, over the limit of {limit} (max_image_pixels)"
            )
        if width < 1 or height < 1:
            raise InvalidInput(f"image has no pixels ({width}x{height})")
        return image

    def _draft(self, image: Image.Image) -> Box | None:
        """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that keeps both sides >= the target."""
        if image.format not in ("JPEG", "MPO"):  # MPO: multi-picture JPEG (some cameras and phones)
            return None
        s = self.config.image_size
        drafted = image.draft(image.mode, (s, s))
        return None if drafted is None else drafted[1]


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag, or None where it is absent or the EXIF block is unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a corrupt EXIF block: keep the pixels as stored, as browsers do
        return None
    return value if isinstance(value, int) else None
