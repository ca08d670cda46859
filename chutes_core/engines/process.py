"""Running an engine that serves an OpenAI-compatible API as a subprocess.

The driver under :class:`~chutes_core.engines.template.OpenAIEngineTemplate`,
which every engine plugin builds on. Used alone, it goes::

    engine = OpenAIServerEngine("myengine", port=10101)

    @chute.on_startup()
    async def start(self):
        path = await fetch_model_async(model_name, revision)
        await engine.start(self, ["myengine-server", "--model", str(path), *engine.server_flags()])

    @chute.on_shutdown()
    async def stop(self):
        await engine.stop()

What it does: holds a random API key shared with the engine (the built-in
``passthrough`` hook adds it to forwarded requests); launches the process in
its own process group; streams its output into the host log with a prefix;
polls ``GET /v1/models`` until ready, failing at once if the process exits;
runs an optional warm-up; then watches the process and, if it dies, makes the
host unready and exit. While it serves, it is also probed (``ready_path``,
every ``health_interval`` seconds, each probe bounded by ``health_timeout``):
an engine that stops answering (hung, not dead) makes the host unready after
``unready_after`` seconds (ready again if it recovers), and makes it exit
with code 1 after ``exit_after`` seconds. ``stop()`` sends SIGTERM to the whole group, then
SIGKILL after ``stop_timeout``, so nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chutes_core import progress
from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    import httpx

    from chutes_core.chute import Chute

Warmup = Callable[["OpenAIServerEngine"], Awaitable[None]]


class EngineError(ChutesError):
    """The engine failed to start, or died."""


class OpenAIServerEngine:
    """One engine subprocess serving an OpenAI-compatible API on loopback."""

    def __init__(
        self,
        name: str,
        *,
        port: int = 10101,
        host: str = "127.0.0.1",
        ready_path: str = "/v1/models",
        ready_timeout: float = 1800.0,
        stop_timeout: float = 30.0,
        warmup: Warmup | None = None,
        api_key: str | None = None,
        health_interval: float = 5.0,
        health_timeout: float = 5.0,
        unready_after: float = 20.0,
        exit_after: float = 120.0,
    ) -> None:
        if not (health_interval > 0 and health_timeout > 0 and unready_after <= exit_after):
            raise ValueError(
                f"engine {name!r}: health_interval and health_timeout must be positive, "
                "and unready_after at most exit_after"
            )
        self.name = name
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.unready_after = unready_after
        self.exit_after = exit_after
        self.port = port
        self.host = host
        self.ready_path = ready_path
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.warmup = warmup
        if api_key is not None and (not api_key or api_key.startswith("-")):
            # argparse reads a value that starts with "-" as the next flag.
            raise ValueError(
                f"engine {name!r}: api_key must be non-empty and must not start with '-' "
                "(the engine's argument parser would read it as a flag)"
            )
        # Hex, never urlsafe base64: a key that began with "-" broke the engine's parser.
        self.api_key = api_key or secrets.token_hex(32)
        self.log = logging.getLogger(f"chutes.engine.{name}")
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self._stopping = False
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._tasks: list[asyncio.Task[Any]] = []
        self._chute: Chute | None = None

    # What templates put on the command line and in passthrough requests ---
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def server_flags(self) -> list[str]:
        """``--host``, ``--port`` and ``--api-key``, spelled as vLLM and SGLang spell them."""
        return ["--host", self.host, "--port", str(self.port), "--api-key", self.api_key]

    @staticmethod
    def of(chute: Chute) -> OpenAIServerEngine | None:
        """The engine a template attached to ``chute`` (``chute.state.engine``)."""
        engine = getattr(chute.state, "engine", None)
        return engine if isinstance(engine, OpenAIServerEngine) else None

    def attach(self, chute: Chute) -> OpenAIServerEngine:
        """Record this engine on ``chute`` so hooks (and the API key) can find it."""
        chute.state.engine = self
        self._chute = chute
        return self

    # Lifecycle -----------------------------------------------------------------
    async def start(
        self,
        chute: Chute | None,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """Launch ``argv``, wait until it serves, warm it up and start watching it.

        Raises :class:`EngineError` (after cleaning up) if the process exits or
        does not become ready within ``ready_timeout`` seconds.
        """
        if chute is not None:
            self.attach(chute)
        environment = {**os.environ, **(env or {})}
        self.log.info("starting %s: %s", self.name, " ".join(self._redact(argv)))
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,  # its own process group: stop() reaches every child
        )
        self._tasks.append(asyncio.create_task(self._pump_logs()))
        # Warm-up phases: launched, answering, warmed up (see chutes_core.progress).
        progress.event(progress.ENGINE_START, f"{self.name}, pid {self.process.pid}")
        try:
            with progress.phase(progress.ENGINE_READY, detail=f"{self.name} on {self.base_url}"):
                await self._wait_ready()
            if self.warmup is not None:
                began = time.monotonic()
                with progress.phase(progress.WARMUP, detail=self.name):
                    await self.warmup(self)
                self.log.info("%s warmed up in %.1fs", self.name, time.monotonic() - began)
        except BaseException:
            await self.stop()
            raise
        self.ready = True
        self._tasks.append(asyncio.create_task(self._monitor()))
        self._tasks.append(asyncio.create_task(self._probe()))

    async def stop(self) -> None:
        """SIGTERM the engine's process group, SIGKILL it after ``stop_timeout``."""
        self._stopping = True
        self.ready = False
        process = self.process
        if process is not None and process.returncode is None:
            self.log.info("stopping %s (pid %d)", self.name, process.pid)
            self._signal_group(signal.SIGTERM)
            if await self._exited(self.stop_timeout) is None:
                self.log.warning(
                    "%s ignored SIGTERM for %.0fs; killing it", self.name, self.stop_timeout
                )
                self._signal_group(signal.SIGKILL)
                await self._exited(None)
        if process is not None:
            # Children that outlived the leader (same group) go too.
            self._signal_group(signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def _pump_logs(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the buffer: take what there is
                raw = await stream.read(65536)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                self.log.info("[%s] %s", self.name, line)

    async def _wait_ready(self) -> None:
        import httpx

        assert self.process is not None
        began = time.monotonic()
        next_report = began + 10
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            while True:
                if self.process.returncode is not None:
                    raise EngineError(
                        f"{self.name} exited with code {self.process.returncode} before it was ready"
                        f"{self._last_lines()}"
                    )
                if await self._answers(client):
                    self.log.info("%s ready in %.1fs", self.name, time.monotonic() - began)
                    return
                now = time.monotonic()
                if now - began > self.ready_timeout:
                    raise EngineError(
                        f"{self.name} was not ready after {self.ready_timeout:.0f}s{self._last_lines()}"
                    )
                if now >= next_report:
                    self.log.info(
                        "waiting for %s to be ready (%.0fs so far)", self.name, now - began
                    )
                    next_report = now + 10
                await self._exited(0.5)

    async def _answers(self, client: httpx.AsyncClient) -> bool:
        import httpx

        try:
            response = await client.get(self.base_url + self.ready_path, headers=self.headers)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def _monitor(self) -> None:
        code = await self._exited(None)
        if self._stopping:
            return
        self.ready = False
        reason = f"{self.name} exited with code {code}{self._last_lines()}"
        self.log.error("%s", reason)
        if self._chute is not None:
            self._chute.fatal(reason)

    async def _probe(self) -> None:
        """Probe the serving engine; a hang turns the host unready, then makes it exit."""
        import httpx

        failing_since: float | None = None
        unready_reason: str | None = None
        async with httpx.AsyncClient(timeout=self.health_timeout, trust_env=False) as client:
            while not self._stopping:
                await asyncio.sleep(self.health_interval)
                if self._stopping or self.process is None or self.process.returncode is not None:
                    return  # stopped, or dead: _monitor reports a death
                if await self._answers(client):
                    if unready_reason is not None:
                        self.log.info("%s answers its health probe again", self.name)
                        self._host_call("clear_unready", unready_reason)
                    failing_since = unready_reason = None
                    continue
                now = time.monotonic()
                failing_since = failing_since or now - self.health_interval
                silent = now - failing_since
                if silent >= self.exit_after:
                    reason = f"{self.name} has not answered its health probe for {silent:.0f}s"
                    self.log.error("%s", reason)
                    self.ready = False
                    if self._chute is not None:
                        self._chute.fatal(reason)
                    return
                if silent >= self.unready_after and unready_reason is None:
                    unready_reason = (
                        f"{self.name} is not answering its health probe (hung or overloaded)"
                    )
                    self._host_call("set_unready", unready_reason)

    def _host_call(self, method: str, reason: str) -> None:
        runtime = self._chute.runtime if self._chute is not None else None
        call = getattr(runtime, method, None)
        if call is not None:
            call(reason)

    async def _exited(self, timeout: float | None) -> int | None:
        """The leader's exit code once it has exited, or None after ``timeout`` seconds.

        Not ``Process.wait()``: on asyncio's own loop that also waits until every
        pipe is closed, and an engine's children (vLLM's EngineCore) can outlive
        the leader with its stdout still open.
        """
        assert self.process is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.process.returncode) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)
        return code

    def _last_lines(self) -> str:
        if not self._tail:
            return ""
        return "; last output:\n  " + "\n  ".join(list(self._tail)[-10:])

    def _redact(self, argv: Sequence[str]) -> list[str]:
        return ["***" if arg == self.api_key else arg for arg in argv]

    # Helpers for templates -----------------------------------------------------------
    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to the engine with its API key (warm-ups, health checks)."""
        import httpx

        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=300.0, trust_env=False
        ) as client:
            return await client.request(method, path, headers=self.headers, **kwargs)


def completion_warmup(model: str, prompt: str = "Hello", max_tokens: int = 1) -> Warmup:
    """A warm-up that asks for a one-token completion from ``model``."""

    async def warmup(engine: OpenAIServerEngine) -> None:
        response = await engine.request(
            "POST",
            "/v1/completions",
            json={"model": model, "prompt": prompt, "max_tokens": max_tokens},
        )
        if response.status_code >= 400:
            raise EngineError(
                f"{engine.name} warm-up failed: HTTP {response.status_code} {response.text[:500]}"
            )

    return warmup
