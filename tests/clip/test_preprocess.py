"""Image preprocessing: bit-identical to open_clip's eval transform, every Pillow mode, clear errors."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageOps

from service.clip.model_config import OPENAI_MEAN, OPENAI_STD, ModelConfig
from service.clip.preprocess import _ORIENT, ImagePreprocessor, PreprocessConfig
from service.errors import InvalidInput, LimitExceeded
from tests.shared_data import require_photos

open_clip = pytest.importorskip("open_clip")

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# A handful of the shared photos: landscape RGB, portrait greyscale, smaller than 224 (upscaled),
# small landscape, and a large portrait (1200x1600: draft mode decodes it at 1/4).
PHOTOS = (
    "n01440764_tench",
    "n04008634_projectile",
    "n02002724_black_stork",
    "n03920288_Petri_dish",
    "n03109150_corkscrew",
)
MAX_PIXELS = 50_000_000


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    by_name = {p.stem: p for p in require_photos()}
    return {name: by_name[name].read_bytes() for name in PHOTOS}


def reference(size: int, mean=OPENAI_MEAN, std=OPENAI_STD, interpolation: str = "bicubic") -> Callable:
    """open_clip's eval transform, as a function of a PIL image returning numpy."""
    transform = open_clip.image_transform(size, is_train=False, mean=mean, std=std, interpolation=interpolation)
    return lambda image: transform(image).numpy()


def ours(size: int, mean=OPENAI_MEAN, std=OPENAI_STD, interpolation: str = "bicubic", **kw) -> ImagePreprocessor:
    return ImagePreprocessor(PreprocessConfig(size, mean, std, interpolation), max_pixels=MAX_PIXELS, **kw)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def assert_same(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    assert a.dtype == np.float32 and a.shape == b.shape, what
    assert np.array_equal(a, b), f"{what}: max abs difference {np.abs(a - b).max()}"  # bit-exact, not only 1e-6


@pytest.mark.parametrize(
    ("size", "mean", "std", "interpolation"),
    [(224, OPENAI_MEAN, OPENAI_STD, "bicubic"), (32, OPENAI_MEAN, OPENAI_STD, "bicubic"),
     (224, *IMAGENET, "bicubic"), (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")],
)  # fmt: skip
def test_photos_bit_exact(photos: dict[str, bytes], size: int, mean, std, interpolation: str) -> None:
    pre, ref = ours(size, mean, std, interpolation), reference(size, mean, std, interpolation)
    for data in photos.values():
        assert_same(pre(data), ref(Image.open(io.BytesIO(data))))


def test_matches_create_model_and_transforms(photos: dict[str, bytes]) -> None:
    _, _, transform = open_clip.create_model_and_transforms("ViT-S-32", pretrained=None)
    cfg = PreprocessConfig.from_model_config(ModelConfig(name="s32", architecture="ViT-S-32"))
    pre = ImagePreprocessor(cfg, max_pixels=MAX_PIXELS)
    for data in list(photos.values())[:2]:
        assert_same(pre(data), transform(Image.open(io.BytesIO(data))).numpy())


def _alpha(size: tuple[int, int]) -> Image.Image:
    return Image.linear_gradient("L").resize(size).rotate(30)


def _tiff_la(rgb: Image.Image) -> bytes:
    """A greyscale TIFF with premultiplied ("associated") alpha, which Pillow opens as mode La."""
    la = rgb.convert("L")
    la.putalpha(_alpha(la.size))
    data = encode(la, "TIFF")
    unassociated = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # ExtraSamples=2, little-endian
    assert data.count(unassociated) == 1
    return data.replace(unassociated, unassociated[:-2] + b"\x01\x00")


def mode_variants(rgb: Image.Image) -> dict[str, bytes]:
    """The photo saved in every mode Pillow opens from files that the brief names, and more."""
    rgba = rgb.copy()
    rgba.putalpha(_alpha(rgb.size))
    la = rgb.convert("L")
    la.putalpha(_alpha(rgb.size))
    p_trns = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    grey = np.asarray(rgb.convert("L"), dtype=np.int64)
    return {
        "RGB-png": encode(rgb, "PNG"),
        "RGB-webp": encode(rgb, "WEBP", lossless=True),
        "P": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=200), "PNG"),
        "P-transparency": encode(p_trns, "PNG", transparency=3),
        "P-gif": encode(rgb, "GIF"),
        "L": encode(rgb.convert("L"), "PNG"),
        "LA": encode(la, "PNG"),
        "La": _tiff_la(rgb),
        "RGBA": encode(rgba, "PNG"),
        "CMYK": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "1": encode(rgb.convert("1"), "PNG"),
        "I;16": encode(Image.fromarray((grey * 257).astype(np.uint16)), "PNG"),
        "I": encode(Image.fromarray((grey - 40).astype(np.int32) * 2), "TIFF"),
        "F": encode(Image.fromarray(grey.astype(np.float32) * 1.3 - 20.5), "TIFF"),
        "RGB-bmp": encode(rgb, "BMP"),
    }


@pytest.fixture(scope="module")
def variants(photos: dict[str, bytes]) -> dict[str, bytes]:
    return mode_variants(Image.open(io.BytesIO(photos["n01440764_tench"])).convert("RGB"))


def test_variants_open_in_the_modes_they_claim(variants: dict[str, bytes]) -> None:
    for name, data in variants.items():
        assert Image.open(io.BytesIO(data)).mode == name.split("-")[0], name


@pytest.mark.parametrize("size", [224, 32])
def test_every_mode_bit_exact(variants: dict[str, bytes], size: int) -> None:
    pre, ref = ours(size), reference(size)
    for name, data in variants.items():
        image = Image.open(io.BytesIO(data))
        if image.mode == "La":  # the reference cannot convert La to RGB; we un-premultiply to LA first
            with pytest.raises(ValueError, match="La"):
                ref(image)
            image.load()
            image = image.convert("LA")
        assert_same(pre(data), ref(image), name)


VIA = {"PA": "RGBA", "RGBa": "RGBA", "La": "LA", "I;16B": "I"}  # what Pillow converts these from


@pytest.mark.parametrize("mode", ["PA", "RGBX", "RGBa", "YCbCr", "LAB", "HSV", "I;16B", "La"])
def test_in_memory_modes(photos: dict[str, bytes], mode: str) -> None:
    """Modes that files rarely hold: preprocess() on the PIL image, same as the reference."""
    rgb = Image.open(io.BytesIO(photos["n03920288_Petri_dish"])).convert("RGB")
    image = rgb.convert(VIA.get(mode, "RGB")).convert(mode)
    assert image.mode == mode
    expected_input = image.convert("LA") if mode == "La" else image
    assert_same(ours(224).preprocess(image), reference(224)(expected_input))


def test_sixteen_bit_saturates_like_the_reference(variants: dict[str, bytes]) -> None:
    out = ours(32)(variants["I;16"])
    white = (1.0 - np.float32(OPENAI_MEAN[0])) / np.float32(OPENAI_STD[0])
    assert np.isclose(out[0], white).mean() > 0.9  # documented: convert('RGB') clamps 16-bit values


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(photos: dict[str, bytes], orientation: int) -> None:
    rgb = Image.open(io.BytesIO(photos["n03920288_Petri_dish"]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(rgb, "JPEG", quality=95, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    out = ours(224)(data)
    assert_same(out, reference(224)(upright))
    if orientation > 1:  # the reference alone ignores the tag, so the pixels differ
        assert not np.array_equal(out, reference(224)(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize(
    "exif_block",
    [b"Exif\x00\x00" + b"\xff" * 30, b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 10,
     b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x09\x00\x00"],
)  # fmt: skip
def test_corrupt_or_invalid_exif_is_ignored(photos: dict[str, bytes], exif_block: bytes) -> None:
    data = photos["n02002724_black_stork"]
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif_block) + 2) + exif_block
    data = data[:2] + app1 + data[2:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow: "Corrupt EXIF data"
        assert_same(ours(32)(data), reference(32)(Image.open(io.BytesIO(data))))


def test_mpo_first_frame_and_draft(photos: dict[str, bytes]) -> None:
    big = Image.open(io.BytesIO(photos["n03109150_corkscrew"]))
    data = encode(big, "MPO", save_all=True, append_images=[big.transpose(Image.Transpose.ROTATE_180)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert_same(ours(224)(data), reference(224)(Image.open(io.BytesIO(data))))
    assert ours(224, draft=True).decode(data).size == (224, 298)  # decoded at 1/4, then resized


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_one_pixel_image(mode: str) -> None:
    data = encode(Image.new(mode, (1, 1), 77 if mode != "RGB" else (10, 200, 30)), "PNG")
    out = ours(224)(data)
    assert_same(out, reference(224)(Image.open(io.BytesIO(data))))
    assert (out == out[:, :1, :1]).all()


def test_animated_gif_uses_first_frame() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (40, 30), c) for c in colours]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = ours(32)(data)
    assert_same(out, reference(32)(Image.open(io.BytesIO(data))))
    red = (np.float32(1) - np.float32(OPENAI_MEAN[0])) / np.float32(OPENAI_STD[0])
    assert np.allclose(out[0], red) and np.allclose(out[1], -np.float32(OPENAI_MEAN[1]) / np.float32(OPENAI_STD[1]))


def test_stack_makes_one_contiguous_batch(photos: dict[str, bytes]) -> None:
    pre = ours(32)
    arrays = [pre(d) for d in photos.values()]
    batch = pre.stack(arrays)
    assert batch.shape == (len(arrays), 3, 32, 32) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert np.array_equal(batch[2], arrays[2])
    assert pre.stack([]).shape == (0, 3, 32, 32)


def test_from_model_config() -> None:
    cfg = ModelConfig(name="m", architecture="ViT-B-32", image_size=32, mean=IMAGENET[0], std=IMAGENET[1],
                      interpolation="bilinear")  # fmt: skip
    assert PreprocessConfig.from_model_config(cfg) == PreprocessConfig(32, IMAGENET[0], IMAGENET[1], "bilinear")


# --- errors -------------------------------------------------------------------------------------


def png_header(width: int, height: int, mode_byte: int = 2) -> bytes:
    """A tiny PNG whose header claims width x height (its pixel data is never reached)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"", "empty"), (b"this is not an image at all", "not an image"), (b"\x89PNG\r\n\x1a\n", "not an image"),
     (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "not an image"), (b"GIF89a", "not an image"),
     (b"BM" + b"\x00" * 60, "BMP header"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image header")],
)  # fmt: skip
def test_not_an_image(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        ours(224)(data)


def test_truncated_jpeg(photos: dict[str, bytes]) -> None:
    data = photos["n01440764_tench"]
    with pytest.raises(InvalidInput, match="truncated"):
        ours(224)(data[: len(data) // 2])


def test_format_outside_the_allow_list(photos: dict[str, bytes]) -> None:
    tga = encode(Image.open(io.BytesIO(photos["n02002724_black_stork"])), "TGA")
    with pytest.raises(InvalidInput, match="supported: JPEG, PNG"):
        ours(224)(tga)
    assert ImagePreprocessor(PreprocessConfig(32), MAX_PIXELS, formats=("TGA",))(tga).shape == (3, 32, 32)


def test_header_over_max_pixels_is_rejected_before_decoding() -> None:
    with pytest.raises(LimitExceeded, match=r"10000x10000 = 100000000 pixels"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        ours(224)(png_header(10_000, 10_000))
    with pytest.raises(LimitExceeded, match="over the limit of 1000000"):
        ImagePreprocessor(PreprocessConfig(224), max_pixels=1_000_000)(png_header(1001, 1000))


def test_pillow_bomb_limits_become_limit_exceeded() -> None:
    generous = ImagePreprocessor(PreprocessConfig(224), max_pixels=10**12)
    with pytest.raises(LimitExceeded, match="over the limit"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow warns in open(); we reject
        generous(png_header(10_000, 10_000))
    with pytest.raises(LimitExceeded, match="decompression bomb"):
        generous(png_header(50_000, 50_000))  # over twice Pillow's limit: Pillow raises in open()


def test_max_bytes(photos: dict[str, bytes]) -> None:
    data = photos["n02002724_black_stork"]
    with pytest.raises(LimitExceeded, match=f"{len(data)} bytes"):
        ImagePreprocessor(PreprocessConfig(224), MAX_PIXELS, max_bytes=len(data) - 1)(data)
    assert ImagePreprocessor(PreprocessConfig(224), MAX_PIXELS, max_bytes=len(data))(data).shape == (3, 224, 224)


# --- JPEG draft mode ----------------------------------------------------------------------------


def test_draft_is_close_and_only_touches_large_jpegs(photos: dict[str, bytes]) -> None:
    exact, fast = ours(224), ours(224, draft=True)
    big = photos["n03109150_corkscrew"]  # 1200x1600: decoded at 300x400
    assert fast.decode(big).size == (224, 298)
    diff = np.abs(exact(big) - fast(big))
    assert 0 < diff.mean() < 0.05 and diff.max() < 1.5  # measured ~0.02 / ~0.5 (docs/benchmarks.md)
    assert np.array_equal(exact(photos["n01440764_tench"]), fast(photos["n01440764_tench"]))  # 500x375: no draft


@pytest.mark.parametrize("orientation", range(2, 9))
def test_draft_box_follows_exif_orientation(orientation: int) -> None:
    """The draft's source box is moved with the pixels, checked against Pillow's own transpose."""
    method, move = _ORIENT[orientation]
    size, box = (40, 30), (0, 0, 33, 21)
    marked = Image.new("L", size)
    marked.paste(255, box)
    assert marked.transpose(method).getbbox() == move(box, *size)


def test_draft_with_orientation_close_to_exact(photos: dict[str, bytes]) -> None:
    big = Image.open(io.BytesIO(photos["n03109150_corkscrew"])).crop((0, 0, 1199, 1597))  # not a multiple of 4
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(big, "JPEG", quality=95, exif=exif)
    exact, fast = ours(224)(data), ours(224, draft=True)(data)
    assert exact.shape == fast.shape == (3, 224, 224)
    assert np.abs(exact - fast).mean() < 0.05


@pytest.mark.parametrize("size", [224, 32])
def test_squash_bit_exact_as_siglip_resizes(size: int) -> None:
    """SigLIP's ``resize_mode='squash'``: both sides to the size, no crop, bit-exact with open_clip."""
    transform = open_clip.image_transform(size, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")
    pre = ImagePreprocessor(PreprocessConfig(size, (0.5,) * 3, (0.5,) * 3, "bicubic", "squash"), max_pixels=MAX_PIXELS)
    rng = np.random.default_rng(0)
    for width, height in ((300, 200), (120, 410), (size, size), (17, 9)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for data in (encode(image, "PNG"), encode(image, "JPEG", quality=90)):
            assert_same(pre(data), transform(Image.open(io.BytesIO(data))).numpy(), f"{width}x{height}")
