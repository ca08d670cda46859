"""``build_diffusion_chute``: text-to-image with diffusers behind ``POST /generate``."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, Response
from typing_extensions import Unpack

from chutes_core import Chute, ChutePack, NodeSelector, progress
from chutes_core.batching import Batcher
from chutes_core.engines.settings import ChuteOptions, chute_from_settings, documents_settings
from chutes_core.errors import InvalidValueError
from chutes_core.validation import check_int, check_number
from chutes_diffusers.schema import MAX_SIDE, MIN_SIDE, GenerationInput

if TYPE_CHECKING:
    from chutes_diffusers.pipeline import Diffusion


@documents_settings
def build_diffusion_chute(
    username: str,
    name: str,
    model_name_or_url: str,
    node_selector: NodeSelector | None = None,
    concurrency: int = 3,
    pipeline_args: dict[str, Any] | None = None,
    revision: str | None = None,
    *,
    max_pixels: int | None = None,
    max_batch_size: int = 1,
    batch_wait_timeout_s: float = 0.05,
    **settings: Unpack[ChuteOptions],
) -> ChutePack:
    """An image-generation chute for ``model_name_or_url``.

    ``model_name_or_url`` is a hub name (fetched at startup), a local pipeline
    directory, or a single-file checkpoint (a ``.safetensors`` path or URL).
    ``pipeline_args`` go to the diffusers loader. Requests over ``max_pixels``
    (``height * width``) get a 422; left unset, the budget is measured at
    startup on a GPU and not enforced on the CPU.

    With ``max_batch_size`` above 1, concurrent requests of the same shape
    (size, steps, guidance, with or without a negative prompt) are generated
    in one pipeline call, up to that many, waiting at most
    ``batch_wait_timeout_s`` for a batch to fill (see ``chutes_core.batching``).
    """
    if not isinstance(model_name_or_url, str) or not model_name_or_url.strip():
        raise InvalidValueError(
            "model_name_or_url",
            model_name_or_url,
            "a hub name, a local path, or a .safetensors URL",
        )
    if pipeline_args is not None and (
        not isinstance(pipeline_args, dict) or not all(isinstance(k, str) for k in pipeline_args)
    ):
        raise InvalidValueError(
            "pipeline_args", pipeline_args, "a dict of keyword arguments for the diffusers loader"
        )
    args = dict(pipeline_args or {})
    if max_pixels is not None:
        check_int("max_pixels", max_pixels, low=MIN_SIDE * MIN_SIDE)
    check_int("max_batch_size", max_batch_size, low=1, high=64)
    check_number("batch_wait_timeout_s", batch_wait_timeout_s, low=0, high=10)
    chute = chute_from_settings(
        "build_diffusion_chute",
        username,
        settings,
        template="diffusion",
        name=name,
        revision=revision,
        node_selector=node_selector,
        concurrency=concurrency,
        tagline=f"{model_name_or_url} image generation",
    )

    @chute.on_startup()
    async def load_pipeline(self: Chute) -> None:
        from chutes_diffusers.pipeline import Diffusion

        # One generation at a time: a pipeline (its scheduler state) is not safe to
        # share between threads. Requests beyond `concurrency` are refused by the host.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusion")
        loop = asyncio.get_running_loop()
        load = functools.partial(
            Diffusion.load, model_name_or_url, revision=revision, pipeline_args=args
        )
        # In this context, so the download inside reports its progress to the host.
        context = contextvars.copy_context()
        with progress.phase(progress.LOAD, detail=model_name_or_url):
            self.diffusion = diffusion = await loop.run_in_executor(self.worker, context.run, load)
        with progress.phase(progress.WARMUP, detail="pixel budget probe"):
            diffusion.max_pixels = max_pixels or await loop.run_in_executor(
                self.worker, diffusion.measure_budget
            )
        self.batcher = None
        if max_batch_size > 1:
            self.batcher = _batcher(diffusion, max_batch_size, batch_wait_timeout_s)
            self.batcher.start()
        if diffusion.max_pixels is None:
            self.logger.info("pixel budget: none (requests up to %dx%d)", MAX_SIDE, MAX_SIDE)
        else:
            side = math.isqrt(diffusion.max_pixels)
            self.logger.info("pixel budget: %d pixels (%dx%d)", diffusion.max_pixels, side, side)

    @chute.on_shutdown()
    async def release(self: Chute) -> None:
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            await batcher.stop()
        worker = getattr(self, "worker", None)
        if worker is not None:
            stop = functools.partial(worker.shutdown, wait=True, cancel_futures=True)
            await asyncio.get_running_loop().run_in_executor(None, stop)
        self.diffusion = None

    @chute.cord(
        public_api_path="/generate",
        output_content_type="image/jpeg",
        input_schema=GenerationInput,
    )
    async def generate(self: Chute, args: GenerationInput) -> Response:
        """Generate an image; the body is the image (JPEG by default)."""
        from chutes_diffusers.pipeline import OutOfMemory

        diffusion = self.diffusion
        refusal = _refusal(args, diffusion)
        if refusal is not None:
            return refusal
        seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
        try:
            if self.batcher is not None:
                (result,) = await self.batcher.submit([(args, seed)])
                if isinstance(result, BaseException):
                    raise result
            else:
                run = functools.partial(diffusion.generate, args, seed=seed)
                result = await asyncio.get_running_loop().run_in_executor(self.worker, run)
        except OutOfMemory as exc:
            self.logger.warning("out of memory at %dx%d: %s", args.width, args.height, exc)
            return JSONResponse(
                {
                    "detail": f"out of memory generating {args.width}x{args.height} "
                    f"({args.height * args.width} pixels); try a smaller image. "
                    "The chute has freed the memory and keeps serving."
                },
                status_code=507,
            )
        self.logger.info(
            "generated %dx%d in %d steps in %.1fs (seed %d)",
            args.width,
            args.height,
            args.num_inference_steps,
            result.seconds,
            seed,
        )
        return Response(result.data, media_type=result.media_type, headers={"x-seed": str(seed)})

    return ChutePack(chute, generate=generate)


def _batcher(diffusion: Diffusion, max_batch_size: int, wait: float) -> Batcher[Any, Any]:
    """Requests of one shape share a pipeline call; a failed call is retried one by one."""
    from chutes_diffusers.pipeline import batch_shape

    def run(batch: list[tuple[GenerationInput, int]]) -> list[Any]:
        return list(diffusion.generate_batch([a for a, _ in batch], seeds=[s for _, s in batch]))

    return Batcher(
        run,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=wait,
        group_key=lambda item: batch_shape(item[0]),
        retry_singly=True,
        name="diffusion",
    )


def _refusal(args: GenerationInput, diffusion: Diffusion) -> JSONResponse | None:
    """A 422 in FastAPI's shape for requests this chute cannot serve, before any work."""
    errors = [
        {
            "type": "unsupported",
            "loc": ["body", name],
            "msg": f"this model ({diffusion.pipeline_class}) takes no {name}",
            "input": getattr(args, name),
        }
        for name in diffusion.unsupported(args)
    ]
    pixels = args.height * args.width
    max_pixels = diffusion.max_pixels
    if max_pixels is not None and pixels > max_pixels:
        side = math.isqrt(max_pixels) // 8 * 8
        message = (
            f"height x width is {pixels} pixels; this chute generates at most {max_pixels} "
            f"(for example {side}x{side})"
        )
        errors += [
            {
                "type": "too_large",
                "loc": ["body", name],
                "msg": message,
                "input": getattr(args, name),
            }
            for name in ("height", "width")
        ]
    return JSONResponse({"detail": errors}, status_code=422) if errors else None
