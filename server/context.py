"""What every route needs, built once by `create_app` and reached through `Depends(context)`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from config import Settings
from index.errors import ModelUnavailable, PeiTuError
from index.ports import Describer
from index.records import IndexReadiness
from index.wiring import DescriberChoice, make_describer
from server.jobs import JobManager
from server.metrics import Metrics
from server.ports import PhotoService
from server.scheduler import IndexScheduler

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class Readiness:
    """Whether the embedding model has loaded; set by the start-up warm-up."""

    model_loaded: bool = False
    problem: str | None = "the embedding model is still loading"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, loaded: bool, problem: str | None) -> None:
        with self._lock:
            self.model_loaded, self.problem = loaded, problem


@dataclass
class ServerContext:
    core: PhotoService  # the core, reached only through the port (never its parts)
    settings: Settings
    jobs: JobManager
    metrics: Metrics
    scheduler: IndexScheduler
    admin_token: str | None
    readiness: Readiness = field(default_factory=Readiness)
    # `/readyz` and `/metrics` run here, never queued behind requests that wait on a model
    probes: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="probe")
    )

    async def probe(self, check: Callable[[], _T]) -> _T:
        """Run a quick blocking check (the store, the status) in the probes' own threads."""
        return await asyncio.get_running_loop().run_in_executor(self.probes, check)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.server.upload_max_mb * 1024 * 1024)

    def describer(self, choice: DescriberChoice) -> Describer:
        """The vision or offline describer a job asks for, built from the settings."""
        return make_describer(self.settings, choice)

    def warm_up(self) -> None:
        """Load the embedding model now, so the first request does not wait for it (blocking)."""
        try:
            self.core.warm_up()
        except (PeiTuError, OSError) as error:
            log.error("the embedding model is not available: %s", error)
            self.readiness.set(False, str(error))
            return
        self.readiness.set(True, None)

    def check_ready(self) -> IndexReadiness:
        """The index's readiness; `ModelUnavailable` unless the model is loaded and the store
        answers."""
        if not self.readiness.model_loaded:
            raise ModelUnavailable(self.readiness.problem or "the embedding model is not loaded")
        return self.core.readiness()


def context(request: Request) -> ServerContext:
    """FastAPI dependency: the server's context."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(context)]
