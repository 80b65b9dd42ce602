"""Train the bundled demo model ``models/clipserve-demo``: a small CLIP trained on CIFAR-10 captions.

Images are the 50,000 CIFAR-10 training JPEGs (``train/<class>/NNNN.jpg`` in a tar); each image is
paired with a caption made from one of the CLIP paper's 18 CIFAR-10 prompt templates (picked at
random every time the image is seen) and its class name. The loss is CLIP's symmetric contrastive
loss (``open_clip.loss.ClipLoss``). The model is an ordinary open_clip architecture (``arch.json``)
with the standard BPE tokenizer; the weights are saved as an fp16 open_clip state dict (safetensors),
which is upcast to fp32 at load time.

Example (the command in the model card)::

    .venv/bin/python scripts/train_demo.py --out models/clipserve-demo

Speed tricks, each exact: the dataset is decoded once into a uint8 array (cached under /tmp); there
are only 180 distinct captions, so every step embeds just the distinct captions of the batch, and
only over the positions the longest caption needs (``service.clip.text.encode_text_trimmed``: CLIP's
causal mask makes later positions irrelevant to the end-of-text feature).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from service.clip.text import encode_text_trimmed

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10"
MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP mean/std
STD = (0.26862954, 0.26130258, 0.27577711)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TEMPLATES = [  # CLIP paper, CIFAR-10 (shared/reference/clip-prompts.md)
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
]


def arch_config(args: argparse.Namespace) -> dict[str, Any]:
    """The open_clip architecture config (saved as ``arch.json``)."""
    return {
        "embed_dim": args.embed_dim,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": args.vision_width},
        "text_cfg": {
            "context_length": 77, "vocab_size": 49408,
            "width": args.text_width, "heads": args.text_heads, "layers": args.text_layers,
        },
    }


def load_split(tar_path: Path, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a CIFAR-10 tar (``split/<class>/*.jpg``) into uint8 images (N, 32, 32, 3) and labels."""
    if cache is not None and cache.is_file():
        data = np.load(cache)
        return data["images"], data["labels"]
    images, labels = [], []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            raw = tar.extractfile(member)
            assert raw is not None
            images.append(np.asarray(Image.open(io.BytesIO(raw.read())).convert("RGB")))
            labels.append(CLASSES.index(parts[1]))
    out = np.stack(images), np.asarray(labels, dtype=np.int64)
    if cache is not None:
        np.savez(cache, images=out[0], labels=out[1])
    return out


def to_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (what open_clip's eval transform gives for 32x32 RGB)."""
    x = batch.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(batch: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (reflect pad ``pad``) and horizontal flip, on a whole NCHW batch at once."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = dx[:, None] + torch.arange(w)  # (n, w)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # (n, 1, w)
    idx = torch.arange(n)[:, None, None]
    # NHWC gather then an NCHW view of it: channels_last, the fast layout for oneDNN convolutions
    return padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def zeroshot_accuracy(model: Any, tokens: torch.Tensor, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 zero-shot accuracy with the 18-template prompt ensemble."""
    model.eval()
    text = F.normalize(encode_text_trimmed(model, tokens), dim=-1).view(len(CLASSES), len(TEMPLATES), -1)
    classes = F.normalize(F.normalize(text.mean(1), dim=-1), dim=-1)
    correct = 0
    for i in range(0, len(images), 500):
        feats = F.normalize(model.encode_image(to_input(torch.from_numpy(images[i : i + 500]))), dim=-1)
        correct += int((feats @ classes.T).argmax(1).eq(torch.from_numpy(labels[i : i + 500])).sum())
    model.train()
    return correct / len(images)


def make_optimizer(model: torch.nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, the logit scale and the (mostly unused) token table."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "logit_scale" in name or "token_embedding" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def save(model: torch.nn.Module, args: argparse.Namespace, meta: dict[str, Any]) -> Path:
    """Write fp16 safetensors weights, arch.json and the train log into ``args.out``."""
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"), metadata={"format": "pt", "dtype": "fp16"})
    (out / "arch.json").write_text(json.dumps(arch_config(args), indent=2) + "\n")
    (out / "train_log.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def write_model_config(out: Path) -> Path:
    """Write ``out/config.json`` (a clipserve ModelConfig) for the fp16 weights saved in ``out``."""
    from safetensors.torch import load_file

    from service.clip.model_config import ModelConfig, write_config

    arch = json.loads((out / "arch.json").read_text())
    scale = load_file(str(out / "weights.safetensors"))["logit_scale"].float().exp().item()
    config = ModelConfig(
        name="clipserve-demo", architecture="clipserve-demo-rn", arch_config="arch.json",
        weights="weights.safetensors", image_size=32, mean=MEAN, std=STD, context_length=77,
        precision="fp32", backend="torch", embed_dim=arch["embed_dim"], logit_scale=round(scale, 4),
    )
    return write_config(config, out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.tar and test.tar")
    p.add_argument("--out", default=str(REPO / "models" / "clipserve-demo"))
    p.add_argument("--cache", type=Path, default=Path("/tmp/clipserve-demo-cache"), help="decoded .npz cache")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=150, help="warmup steps")
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--vision-width", type=int, default=32)
    p.add_argument("--text-width", type=int, default=64)
    p.add_argument("--text-heads", type=int, default=2)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="1: a second thread stalls badly on a busy machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-images", type=int, default=2000, help="test images for the per-epoch check")
    p.add_argument("--max-steps", type=int, default=0, help="stop early (timing trials)")
    p.add_argument("--write-config", action="store_true", help="only (re)write config.json for --out's weights")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images and labels, and the seeded test subset for the per-epoch check."""
    args.cache.mkdir(parents=True, exist_ok=True)
    train_x, train_y = load_split(args.data / "train.tar", args.cache / "train.npz")
    test_x, test_y = load_split(args.data / "test.tar", args.cache / "test.npz")
    pick = np.random.default_rng(args.seed).permutation(len(test_x))[: args.eval_images]
    return train_x, train_y, test_x[pick], test_y[pick]


def train_step(
    model: Any, opt: torch.optim.Optimizer, loss_fn: Any, tokens: torch.Tensor,
    images: np.ndarray, labels: np.ndarray, gen: torch.Generator, lr: float,
) -> float:
    """One contrastive step on a batch; each image gets a random template of its class as caption."""
    batch = augment(to_input(torch.from_numpy(images)), gen)
    cap = torch.from_numpy(labels) * len(TEMPLATES) + torch.randint(0, len(TEMPLATES), (len(images),), generator=gen)
    uniq, inverse = torch.unique(cap, return_inverse=True)
    text = F.normalize(encode_text_trimmed(model, tokens[uniq]), dim=-1)[inverse]
    image = F.normalize(model.encode_image(batch), dim=-1)
    loss = loss_fn(image, text, model.logit_scale.exp())
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(loss.item())


def main(argv: list[str] | None = None) -> int:
    """Train, checkpointing (and checking zero-shot accuracy on a test subset) after every epoch."""
    import open_clip
    from open_clip.loss import ClipLoss

    args = parse_args(argv)
    if args.write_config:
        print(write_model_config(Path(args.out)))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.time()
    train_x, train_y, test_x, test_y = load_data(args)
    print(f"data: {len(train_x)} train, {len(test_x)} check images ({time.time() - start:.0f}s)", flush=True)
    model = open_clip.model.CLIP(**arch_config(args))
    model.visual.to(memory_format=torch.channels_last)  # ~4x faster fwd+bwd on CPU (measured)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params / 1e6:.2f}M (fp16 file ~{2 * n_params / 1e6:.1f} MB)", flush=True)
    tokenizer = open_clip.get_tokenizer("RN50")  # the standard CLIP BPE tokenizer (vocab 49408)
    tokens = tokenizer([t.format(c) for c in CLASSES for t in TEMPLATES])  # caption id = class * 18 + template
    loss_fn, opt = ClipLoss(), make_optimizer(model, args.lr, args.wd)
    gen, rng = torch.Generator().manual_seed(args.seed), np.random.default_rng(args.seed)
    steps_per_epoch = len(train_x) // args.batch_size
    total = args.epochs * steps_per_epoch
    last = min(total, args.max_steps or total)
    history: list[dict[str, float]] = []
    step, train_start = 0, time.time()
    model.train()
    for epoch in range(args.epochs):
        order = rng.permutation(len(train_x))
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            lr = lr_at(step, total, args.warmup, args.lr)
            loss = train_step(model, opt, loss_fn, tokens, train_x[idx], train_y[idx], gen, lr)
            step += 1
            if step % 25 == 0:
                rate = step * args.batch_size / (time.time() - train_start)
                print(f"epoch {epoch} step {step}/{total} loss {loss:.3f} "
                      f"scale {model.logit_scale.exp().item():.1f} {rate:.0f} img/s", flush=True)
            if step >= last:
                break
        acc = zeroshot_accuracy(model, tokens, test_x, test_y)
        history.append({"epoch": epoch + 1, "step": step, "check_top1": acc, "elapsed_s": time.time() - start})
        print(f"== epoch {epoch + 1}: zero-shot top-1 on {len(test_x)} test images {acc:.4f} "
              f"({time.time() - start:.0f}s)", flush=True)
        meta = {"args": {k: str(v) for k, v in vars(args).items()}, "params": n_params,
                "history": history, "wall_time_s": time.time() - start, "torch": torch.__version__}
        save(model, args, meta)
        if step >= last:
            break
    write_model_config(Path(args.out))
    print(f"done in {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
