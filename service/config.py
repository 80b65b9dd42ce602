"""Settings: one pydantic-settings class, read from the environment (prefix ``CLIPSERVE_``).

Every CLI flag of ``clipserve serve`` is also an environment variable. Settings are built once
(``Settings()``) and injected into ``create_app``; nothing reads a global.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.auth import ApiKeys, load_api_keys, read_key_file, warn_if_on_command_line

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "clipserve-demo"
DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?)$"
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
ORIGIN_PATTERN = r"https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?"  # what a browser sends as Origin
HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$")


class SettingError(ValueError):
    """A setting whose value cannot work here, found at start-up: ``setting`` is the field's name,
    ``value`` the offending part of its value (None: all of it)."""

    def __init__(self, setting: str, message: str, value: object = None) -> None:
        super().__init__(message if value is None else f"{value}: {message}")
        self.setting = setting
        self.message = message
        self.value = value


def _default_model_dir() -> Path:
    return REPO_MODELS_DIR if REPO_MODELS_DIR.is_dir() else Path("models")


class Settings(BaseSettings):
    """Server configuration. Each field is also ``CLIPSERVE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CLIPSERVE_", extra="ignore", protected_namespaces=())

    # Network
    host: str = Field("127.0.0.1", description="REST bind address.")
    port: int = Field(8000, ge=0, le=65535, description="REST port (0-65535); 0 turns REST off.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0-65535); 0 turns gRPC off.")
    max_connections: int = Field(
        2048, ge=0, description="Open REST connections; past it uvicorn answers 503 (0: no limit)."
    )
    backlog: int = Field(2048, ge=1, description="Connections the kernel queues before REST accepts them.")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="Idle REST keep-alive connections close after this.")

    # Models
    model: str = Field(
        DEFAULT_MODEL,
        description="Model(s) to serve, comma-separated; each a model repository entry (a folder of the "
        "model repository with a config.json), ARCH:PRETRAINED (open_clip, e.g. ViT-B-32:openai), "
        "ARCH:/path/to/checkpoint, or a Hugging Face CLIP folder.",
    )
    model_dir: Path = Field(default_factory=_default_model_dir, description="The model repository.")
    backend: Literal["torch", "onnx"] | None = Field(
        None, description="Override each model's backend (default: each model's own; ONNX Runtime where a model "
        "does not say, exported on first start and cached, torch where that export fails).",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    precision: Literal["fp32", "fp16", "bf16"] | None = Field(None, description="Override precision (GPU).")
    workers_per_model: int = Field(1, ge=1, description="Worker instances per model (one per GPU, say).")
    inference_threads: int = Field(0, ge=0, description="Threads per model compute (0: the runtime's default).")
    onnx_providers: str = Field(
        "", description="Comma-separated ONNX Runtime providers in order of preference (empty: best available)."
    )
    onnx_graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level."
    )
    onnx_memory_arena: bool = Field(True, description="ONNX Runtime's CPU memory arena (off: less memory held).")
    warmup: bool = Field(True, description="Warm each model up before reporting ready.")
    cache_dir: Path | None = Field(
        None, description="Where downloaded weights and on-demand ONNX exports are cached (default: ~/.cache)."
    )
    onnx_cache_verify: bool = Field(
        False, description="Check a cached ONNX export against the weights' digest stored with it (reads the "
        "whole weights file; off: size, modification time and path identify the weights).",
    )

    # Batching
    max_batch_size: int = Field(32, ge=1, description="Largest batch the batcher forms.")
    max_delay_ms: float = Field(
        10.0, ge=0, description="Longest wait for a batch to fill (adaptive: once its worker is ready)."
    )
    adaptive_batching: bool = Field(
        True, description="Close batches at the recent concurrency (off: wait max_delay_ms for a full batch)."
    )
    queue_size: int = Field(1024, ge=1, description="Items that may wait per model and modality; past it: 429.")
    max_requests_in_flight: int = Field(
        512, ge=1, description="REST requests in progress at once; past it: 429 before the body is read."
    )
    max_items_in_flight: int = Field(
        2048, ge=1, description="Items admitted at once, all models together; past it: 429 (memory bound)."
    )
    max_body_bytes_in_flight: int = Field(
        256 * 1024 * 1024, ge=1, description="Request body bytes being read or held at once; past it: 429."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Longest time to receive a request body (REST); past it: 408."
    )
    header_timeout_s: float = Field(
        10.0, gt=0,
        description="Longest time to receive a request's headers (REST); past it: 408 and the connection closes.",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Per-request deadline; past it: 504.")
    preprocess_threads: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1), ge=1,
        description="Threads that decode and preprocess images.",
    )

    # Limits
    max_items_per_request: int = Field(256, ge=1, description="Inputs per request.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Request body size.")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Encoded size of one image.")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Pixels of one image (decompression bombs).")
    max_text_chars: int = Field(2000, ge=1, description="Characters of one text.")
    max_labels: int = Field(2000, ge=1, description="Labels (and templates) per classify request.")
    max_prompts: int = Field(
        100_000, ge=1, description="Prompts (labels x templates) per classify request; ImageNet's set is 80,000."
    )
    max_prompt_chars: int = Field(
        4_000_000, ge=1, description="Characters of all prompts of one classify request together."
    )
    max_class_jobs: int = Field(2, ge=1, description="Class-embedding computations (new label sets) run at once.")
    class_cache_size: int = Field(64, ge=0, description="Zero-shot class-embedding matrices kept (LRU).")
    jpeg_draft: bool = Field(False, description="Decode large JPEGs at reduced scale (faster, slightly different).")

    # gRPC
    grpc_max_message_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest gRPC message.")
    grpc_tls_cert: Path | None = Field(None, description="PEM certificate; with the key, turns TLS on.")
    grpc_tls_key: Path | None = Field(None, description="PEM private key.")

    # API keys: all of these count; with none, no key is needed (service/auth.py checks them)
    api_key: str | None = Field(
        None, repr=False,
        description="An API key clients must send (X-API-Key or Authorization: Bearer); as a flag it shows in ps.",
    )
    api_keys: str = Field(
        "", repr=False, description="API keys, comma-separated (each works; rotate by adding, then removing)."
    )
    api_key_file: Path | None = Field(
        None, description="File of API keys, one per line, # comments (a mounted Kubernetes Secret)."
    )

    @field_validator("api_key_file")
    @classmethod
    def _api_key_file_readable(cls, path: Path | None) -> Path | None:
        """The key file must be readable and hold a key now, not at the first request (fails closed)."""
        if path is not None:
            read_key_file(path)
        return path

    @field_validator("api_key", "api_keys")
    @classmethod
    def _warn_key_flag(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A key given as a flag is visible to other users of the host: say so."""
        if value and info.field_name:
            warn_if_on_command_line(sys.argv, "--" + info.field_name.replace("_", "-"))
        return value

    def api_key_set(self) -> ApiKeys:
        """The accepted API keys (empty: none needed); reads ``api_key_file`` (ValueError if it is gone)."""
        return load_api_keys(self.api_key, self.api_keys, self.api_key_file)

    # Browsers
    playground: bool = Field(True, description="Serve the web playground at / (off: / answers 404).")
    cors_origins: str = Field(
        "", description="Origins that browsers may call the API from, comma-separated (https://app.example.com; "
        "* for any); empty: no CORS.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins_are_origins(cls, value: str) -> str:
        """Each is ``*`` or ``scheme://host[:port]``, nothing more (a browser's Origin never has a path)."""
        for origin in (o.strip() for o in value.split(",") if o.strip()):
            if origin != "*" and not re.fullmatch(ORIGIN_PATTERN, origin):
                raise ValueError(f"{origin!r} is not an origin (http(s)://host[:port], no path, or *)")
        return value

    def cors_origin_list(self) -> list[str]:
        """The allowed CORS origins (empty: CORS off)."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    # Operations
    drain_timeout_s: float = Field(30.0, ge=0, description="On SIGTERM, longest wait for in-flight work.")
    malloc_arena_max: int = Field(
        2, ge=0, description="glibc malloc arenas (0: glibc's default of 8 per core); fewer hold less memory."
    )
    log_json: bool = Field(False, description="Structured JSON logs.")
    log_level: str = Field("INFO", description="Log level: critical, error, warning, info or debug.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        """cpu, cuda or cuda:N."""
        if not re.match(DEVICE_PATTERN, value):
            raise ValueError("not a device (cpu, cuda or cuda:N)")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        """One of logging's level names, any case; stored upper-case."""
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"not a log level (one of {', '.join(n.lower() for n in LOG_LEVELS)})")
        return value.upper()

    def model_names(self) -> list[str]:
        """The configured model names, in order; the first is the default."""
        return [m.strip() for m in self.model.split(",") if m.strip()]

    # Image URLs: images given as http(s) URLs, fetched by the server (service/engine/fetch.py)
    image_urls: bool = Field(True, description="Fetch images given as http(s) URLs (off: such an image is a 422).")
    image_url_allow_private: bool = Field(
        False, description="Fetch from loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7) and shared "
        "(100.64/10) addresses; link-local (169.254/16, cloud metadata) stays refused unless an allowed host.",
    )
    image_url_allowed_hosts: str = Field(
        "", description="Image URL hosts admitted whatever their address, comma-separated: host names, addresses "
        "or CIDR networks (e.g. 127.0.0.1,10.1.0.0/16,images.internal).",
    )
    image_url_connect_timeout_s: float = Field(5.0, gt=0, description="Longest wait to connect to an image URL's host.")
    image_url_timeout_s: float = Field(
        15.0, gt=0, description="Longest time to fetch one image URL, redirects included; past it: 422."
    )
    image_url_max_redirects: int = Field(3, ge=0, description="Redirects followed per image URL, each checked again.")
    image_url_max_in_flight: int = Field(
        64, ge=1, description="Image URLs being fetched at once; past it a request with URLs gets 429."
    )

    @field_validator("image_url_allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, value: str) -> str:
        """Each entry a host name, an address or a CIDR network (checked now, not at the first fetch)."""
        parse_allowed_hosts(value)
        return value

    def allowed_hosts(self) -> AllowedHosts:
        """``image_url_allowed_hosts`` parsed: host names (lower case) and networks."""
        return parse_allowed_hosts(self.image_url_allowed_hosts)


@dataclass(frozen=True)
class AllowedHosts:
    """Hosts the image fetcher connects to whatever their addresses: by name, or by address (a network)."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def admits(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True when ``host`` (as in the URL) is named, or ``address`` is in a named network."""
        return host.lower().rstrip(".") in self.names or any(address in net for net in self.networks)


def parse_allowed_hosts(value: str) -> AllowedHosts:
    """``"127.0.0.1, 10.0.0.0/8, images.internal"`` as names and networks; ValueError naming a bad entry."""
    names: set[str] = set()
    networks = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            if "/" in entry or ":" in entry or not HOST_NAME.match(entry):
                raise ValueError(f"{entry!r} is neither a host name, an address nor a CIDR network") from None
        names.add(entry.lower().rstrip("."))
    return AllowedHosts(frozenset(names), tuple(networks))
