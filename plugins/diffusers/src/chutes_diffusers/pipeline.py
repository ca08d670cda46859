"""Loading a diffusers pipeline and generating images with it.

Everything here that touches the pipeline is blocking and runs in the
chute's single worker thread; torch and diffusers are imported on first use.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chutes_diffusers.schema import MAX_SIDE, MEDIA_TYPES, GenerationInput

log = logging.getLogger("chutes.diffusion")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
#: Only SDXL single-file checkpoints hold a second text encoder under this prefix.
SDXL_SINGLE_FILE_KEY = "conditioner.embedders.1."
#: Request fields and the pipeline arguments they become.
PIPELINE_FIELDS = (
    "prompt",
    "negative_prompt",
    "height",
    "width",
    "num_inference_steps",
    "guidance_scale",
)
MAX_PIXELS = MAX_SIDE * MAX_SIDE
PROBE_SIDE = 512
_step_seconds: Any = None


class OutOfMemory(Exception):
    """A generation ran out of memory; what it held has been released."""


def step_metric() -> Any:
    """Seconds per denoising step, in prometheus-client's default registry."""
    global _step_seconds
    if _step_seconds is None:
        from prometheus_client import Histogram

        _step_seconds = Histogram(
            "chutes_diffusion_step_seconds",
            "Time per denoising step.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
    return _step_seconds


def is_single_file(source: str) -> bool:
    return source.split("?", 1)[0].endswith(SINGLE_FILE_SUFFIXES)


def device_and_dtype() -> tuple[str, Any]:
    """CUDA in fp16 when there is a GPU, else the CPU in fp32 (fp16 is slow or unsupported there)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.float16
    return "cpu", torch.float32


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed (CUDA, the CPU allocator, or Python)."""
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # The CPU allocator and some backends raise a plain RuntimeError.
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_memory() -> None:
    """Give back what a failed generation left behind (call once nothing refers to it)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pixel_budget(
    *, free_bytes: float, probe_pixels: int, probe_bytes: float, headroom: float = 0.8
) -> int:
    """The most pixels one generation can afford, scaled from a measured probe.

    A generation's peak memory grows about linearly with its pixel count
    (convolutions, and attention in memory-efficient kernels), so the probe's
    bytes per pixel, against the free memory less some headroom, bound the
    request size. Never below the probe (it ran) nor above the request limit.
    """
    per_pixel = max(probe_bytes, 1.0) / probe_pixels
    affordable = int(free_bytes * headroom / per_pixel)
    return max(probe_pixels, min(MAX_PIXELS, affordable))


@dataclass
class Generated:
    data: bytes
    media_type: str
    seed: int
    seconds: float


class Diffusion:
    """A loaded pipeline, what it accepts, and how large a request it can afford."""

    def __init__(self, pipeline: Any, *, max_pixels: int | None = None) -> None:
        self.pipeline = pipeline
        self.max_pixels = max_pixels
        self.parameters = frozenset(
            name
            for name, parameter in inspect.signature(pipeline.__call__).parameters.items()
            if parameter.kind is not inspect.Parameter.VAR_KEYWORD
        )

    @classmethod
    def load(cls, source: str, *, revision: str | None, pipeline_args: dict[str, Any]) -> Diffusion:
        return cls(load_pipeline(source, revision=revision, pipeline_args=pipeline_args))

    @property
    def pipeline_class(self) -> str:
        return type(self.pipeline).__name__

    def unsupported(self, request: GenerationInput) -> list[str]:
        """Fields the caller set that this pipeline has no argument for."""
        return sorted(
            name
            for name in request.model_fields_set & set(PIPELINE_FIELDS)
            if name not in self.parameters
        )

    def generate(self, request: GenerationInput, *, seed: int) -> Generated:
        """One image. Raises :class:`OutOfMemory` (memory already freed) when it cannot fit."""
        return self.generate_batch([request], seeds=[seed])[0]

    def generate_batch(
        self, requests: list[GenerationInput], *, seeds: list[int]
    ) -> list[Generated]:
        """One image per request, in one pipeline call: the requests must share a shape
        (see :func:`batch_shape`). Raises :class:`OutOfMemory` (memory already freed)."""
        failure: str | None = None
        began = time.perf_counter()
        try:
            images = self._generate(requests, seeds)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        # Outside the handler, so the traceback (and the tensors its frames hold) is gone.
        if failure is not None:
            free_memory()
            raise OutOfMemory(failure)
        seconds = time.perf_counter() - began
        return [
            Generated(data, MEDIA_TYPES[request.output_format], seed, seconds)
            for data, request, seed in zip(images, requests, seeds, strict=True)
        ]

    def _generate(self, requests: list[GenerationInput], seeds: list[int]) -> list[bytes]:
        import torch

        from chutes_core.kernels import get_kernel

        request = requests[0]
        steps = request.num_inference_steps
        metric = step_metric()
        last = time.perf_counter()

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            nonlocal last
            now = time.perf_counter()
            metric.observe(now - last)
            log.info("step %d/%d (%.2fs)", step + 1, steps, now - last)
            last = now
            return tensors

        arguments: dict[str, Any] = {
            name: getattr(request, name)
            for name in PIPELINE_FIELDS
            if name in self.parameters and getattr(request, name) is not None
        }
        if len(requests) > 1:  # the per-image fields become lists
            for name in ("prompt", "negative_prompt"):
                if name in arguments:
                    arguments[name] = [getattr(r, name) for r in requests]
        if "callback_on_step_end" in self.parameters:
            arguments["callback_on_step_end"] = on_step_end
        # Seeded on the CPU: the same seed gives the same image on any device.
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        generator = generators[0] if len(generators) == 1 else generators
        with torch.inference_mode():
            images = self.pipeline(**arguments, generator=generator, output_type="pt").images
            images = _as_nchw_tensor(images)
            # The pipeline's own decode leaves pixels in [0, 1]; one fused pass makes uint8 NHWC.
            pixels = get_kernel("diffusion.to_uint8_nhwc")(images, low=0.0, high=1.0)
        return [_encode(pixels[i].cpu().numpy(), r.output_format) for i, r in enumerate(requests)]

    def measure_budget(self) -> int | None:
        """On CUDA, the pixel budget measured by one probe generation; ``None`` elsewhere.

        The probe doubles as a warm-up. Any failure leaves the chute without a
        budget (out-of-memory answers still protect it) rather than failing startup.
        """
        import torch

        if not torch.cuda.is_available():
            return None
        probe = GenerationInput(
            prompt="a photo of a cat",
            height=PROBE_SIDE,
            width=PROBE_SIDE,
            num_inference_steps=2,
            output_format="png",
        )
        try:
            free_memory()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
            self.generate(probe, seed=0)
            peak = torch.cuda.max_memory_allocated() - baseline
            free_memory()
            free, _total = torch.cuda.mem_get_info()
        except Exception as exc:
            log.warning("could not measure a pixel budget (%s); none is enforced", exc)
            return None
        return pixel_budget(free_bytes=free, probe_pixels=PROBE_SIDE * PROBE_SIDE, probe_bytes=peak)


def load_pipeline(source: str, *, revision: str | None, pipeline_args: dict[str, Any]) -> Any:
    """The pipeline for ``source``: SDXL is tried first, then SD, then any DiffusionPipeline."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    from chutes_core.engines.hub import fetch_model

    device, dtype = device_and_dtype()
    args = _loader_args(pipeline_args, dtype)
    if is_single_file(source):
        path = _local_file(source)
        attempts = [
            ("StableDiffusionXLPipeline (single file)", StableDiffusionXLPipeline.from_single_file),
            ("StableDiffusionPipeline (single file)", StableDiffusionPipeline.from_single_file),
        ]
        if not _is_sdxl_checkpoint(path):
            attempts = attempts[1:]
        target = str(path)
    else:
        target = str(fetch_model(source, revision))
        attempts = [
            ("StableDiffusionXLPipeline", StableDiffusionXLPipeline.from_pretrained),
            ("StableDiffusionPipeline", StableDiffusionPipeline.from_pretrained),
            ("DiffusionPipeline", DiffusionPipeline.from_pretrained),
        ]
        declared = _declared_class(Path(target))
        # Skip loads that cannot work: each one reads every weight file.
        if declared == "StableDiffusionPipeline":
            attempts = attempts[1:]
        elif declared is not None and declared != "StableDiffusionXLPipeline":
            attempts = attempts[2:]  # another family (Flux, SD3...): diffusers picks the class
    failures = []
    for label, loader in attempts:
        try:
            pipeline = loader(target, **args)
            if label.startswith("StableDiffusionXL") and not pipeline.text_encoder_2:
                raise ValueError("no second text encoder: these are not SDXL weights")
        except Exception as exc:  # wrong pipeline class for these weights: try the next
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        log.info("loaded %s as %s on %s (%s)", target, label, device, str(pipeline.dtype))
        pipeline = pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)  # steps are logged instead
        return pipeline
    raise RuntimeError(f"no diffusers pipeline could load {source!r}:\n  " + "\n  ".join(failures))


def _loader_args(pipeline_args: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """``pipeline_args`` for the loader: the device's dtype unless one is given.

    A dtype may be given by name (``"bfloat16"``), so chute modules need not import torch.
    """
    import diffusers
    import torch

    args = dict(pipeline_args)
    for key in ("dtype", "torch_dtype"):
        if isinstance(args.get(key), str):
            args[key] = getattr(torch, args[key].removeprefix("torch."))
    if "dtype" not in args and "torch_dtype" not in args:
        major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
        # diffusers 0.40 renamed torch_dtype to dtype (and warns about the old name).
        args["dtype" if (major, minor) >= (0, 40) else "torch_dtype"] = dtype
    return args


def _declared_class(directory: Path) -> str | None:
    """The pipeline class a diffusers directory names in its model_index.json."""
    index = directory / "model_index.json"
    if not index.is_file():
        return None
    import json

    name = json.loads(index.read_text()).get("_class_name")
    return name if isinstance(name, str) else None


def _is_sdxl_checkpoint(path: Path) -> bool:
    """Whether a single-file checkpoint holds SDXL weights (from the header alone)."""
    if path.suffix != ".safetensors":
        return True  # pickled checkpoints cannot be inspected cheaply: try SDXL first
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as checkpoint:
        return any(key.startswith(SDXL_SINGLE_FILE_KEY) for key in checkpoint.keys())  # noqa: SIM118


def _local_file(source: str) -> Path:
    """A single-file checkpoint on disk: a path as-is, a URL downloaded once into the cache."""
    if os.path.exists(source):
        return Path(source)
    if source.startswith(("http://", "https://")):
        from huggingface_hub.file_download import http_get

        cache = (
            Path(os.environ.get("CHUTES_CACHE_DIR") or Path.home() / ".cache" / "chutes")
            / "single-file"
        )
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / source.split("?", 1)[0].rsplit("/", 1)[-1]
        if not path.exists():
            log.info("downloading %s", source)
            partial = path.with_suffix(path.suffix + ".partial")
            with partial.open("wb") as out:
                http_get(source, out)
            partial.rename(path)  # only a complete file takes the final name
        return path
    raise FileNotFoundError(f"single-file checkpoint {source!r} is neither a file nor a URL")


def _as_nchw_tensor(images: Any) -> Any:
    """A pipeline's ``output_type="pt"`` images as one (N, C, H, W) tensor in [0, 1]."""
    import numpy
    import torch

    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, numpy.ndarray):  # some pipelines answer NumPy (N, H, W, C)
        return torch.from_numpy(images).permute(0, 3, 1, 2)
    raise TypeError(f"the pipeline returned {type(images).__name__}, not image tensors")


def batch_shape(request: GenerationInput) -> tuple[Any, ...]:
    """What requests must share to be generated in one pipeline call."""
    return (
        request.height,
        request.width,
        request.num_inference_steps,
        request.guidance_scale,
        request.negative_prompt is None,
    )


def _encode(pixels: Any, output_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
