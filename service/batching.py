"""How `/score` bodies reach the detector: small requests micro-batched, large ones scored directly.

A forward pass over one record costs nearly as much as one over 64 (Python and dispatch overhead, not
arithmetic, dominate a small MLP), so concurrent single-record requests are gathered and scored in
one pass. `MicroBatcher` keeps a queue of checked requests; one task takes what has gathered (at
most `max_records` records, waiting at most `max_wait_seconds` for more after the first) and scores
it on a single worker thread, so the event loop keeps parsing requests meanwhile. Under load, batches
form while the previous one is being scored, even with no wait at all.

Isolation: each request is checked (`DataKind.request_inputs`) on its own before it joins a
batch, so a bad request gets its 422 and never touches the others; if scoring a gathered batch fails
anyway, each of its requests is scored alone, so only the one at fault fails. Scores do not depend on
the batch (fixed posterior noise, see `model.scoring`); a record's score in a batch equals its score
alone within float round-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.base import InputLimits, RequestBody
from vae_anomaly.service.errors import ApiError
from vae_anomaly.service.metrics import ModelMetrics
from vae_anomaly.service.settings import Settings
from vae_anomaly.service.state import ServiceState

logger = logging.getLogger(__name__)

Results = list[dict[str, Any]]


def check_inputs(detector: Detector, body: RequestBody, limits: InputLimits) -> Any:
    """Check a body's inputs against the model, by its kind (raises `InputError`)."""
    return detector.kind.request_inputs(body, limits)


def input_limits(settings: Settings) -> InputLimits:
    """The server's limits on decoding a request's inputs."""
    return InputLimits(max_image_pixels=settings.max_image_pixels, max_request_pixels=settings.max_request_pixels)


def score_and_observe(detector: Detector, metrics: ModelMetrics, inputs: Any, explain: int) -> Results:
    """Score checked inputs, build the result objects, then count them in the metrics (once each)."""
    scored = detector.score(inputs)
    results = detector.results(scored, explain)
    metrics.observe_scores(scored.terms.score, scored.exceeded, scored.thresholds.names)
    return results


@dataclass
class _Job:
    detector: Detector  # the request's snapshot: a reload never mixes models in one batch
    metrics: ModelMetrics
    inputs: Any  # checked inputs of the detector's kind
    size: int
    explain: int
    future: asyncio.Future[Results]


class MicroBatcher:
    """Gathers concurrent small scoring requests into one forward pass; see the module docstring."""

    def __init__(
        self,
        max_records: int,
        max_wait_seconds: float,
        executor: ThreadPoolExecutor | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_batch: Callable[[], None] | None = None,
    ):
        self.max_records = max_records
        self._on_batch = on_batch  # on the event loop after each batch's results are handed out
        self._on_depth = on_depth  # told the queued records after every change (a gauge's `set`)
        self.max_wait_seconds = max_wait_seconds
        self._pending: deque[_Job] = deque()
        self._pending_records = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        # The service's one compute thread (`ServiceState.compute_thread`), or a thread of its own.
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae-anomaly-batch")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._scoring = False
        self.batches = 0  # scored batches and records, for tests and logs
        self.records = 0

    def start(self) -> None:
        """Start the gathering task on the running event loop (the app's lifespan calls this)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vae-anomaly-micro-batcher")

    async def close(self) -> None:
        """Score what is still queued, then stop the task and the worker thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        if self.batches:
            logger.info(
                "micro-batcher: %d records in %d batches (%.1f per batch)",
                self.records,
                self.batches,
                self.records / self.batches,
            )
        if self._own_executor:
            self._executor.shutdown(wait=True)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being scored."""
        return not self._pending and not self._scoring

    async def score(self, detector: Detector, metrics: ModelMetrics, inputs: Any, explain: int) -> Results:
        """Queue checked inputs; resolve to their results, in input order, once their batch is scored."""
        if self._closing:
            raise ApiError(503, "the server is shutting down; retry on another instance", "shutting_down")
        size = detector.kind.count(inputs)
        job = _Job(detector, metrics, inputs, size, explain, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._pending_records += size
        if self._on_depth is not None:
            self._on_depth(self._pending_records)
        self._arrived.set()
        if self._pending_records >= self.max_records:
            self._full.set()
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            if self.max_wait_seconds > 0 and self._pending_records < self.max_records and not self._closing:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_wait_seconds)
            jobs = self._take()
            self._scoring = True
            try:
                outcomes = await loop.run_in_executor(self._executor, self._score_jobs, jobs)
            finally:
                self._scoring = False
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():  # the caller went away (client disconnected)
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
            if self._on_batch is not None:
                self._on_batch()

    def _take(self) -> list[_Job]:
        """The oldest jobs up to `max_records` records (at least one job), in arrival order, all for
        the same model (after a reload, requests still holding the old one form their own batch)."""
        jobs = [self._pending.popleft()]
        total = jobs[0].size
        while (
            self._pending
            and total + self._pending[0].size <= self.max_records
            and self._pending[0].detector is jobs[0].detector
        ):
            job = self._pending.popleft()
            jobs.append(job)
            total += job.size
        self._pending_records -= total
        if self._on_depth is not None:
            self._on_depth(self._pending_records)
        if not self._pending:
            self._arrived.clear()
        if self._pending_records < self.max_records:
            self._full.clear()
        return jobs

    def _score_jobs(self, jobs: list[_Job]) -> list[Results | BaseException]:
        """On the worker thread: one pass for the batch, results split back per job."""
        self.batches += 1
        self.records += sum(job.size for job in jobs)
        if len(jobs) == 1:
            return [self._score_alone(jobs[0])]
        explain = max(job.explain for job in jobs)
        kind = jobs[0].detector.kind
        try:
            inputs = kind.concat([job.inputs for job in jobs])
            results = score_and_observe(jobs[0].detector, jobs[0].metrics, inputs, explain)
        except Exception:
            logger.exception("scoring a batch of %d requests failed; scoring them one by one", len(jobs))
            return [self._score_alone(job) for job in jobs]
        outcomes: list[Results | BaseException] = []
        start = 0
        for job in jobs:
            part = results[start : start + job.size]
            start += job.size
            if job.explain < explain:  # explanations are ranked, so the first `explain` are this job's
                for result in part:
                    result[kind.explanation_field] = result[kind.explanation_field][: job.explain]  # type: ignore[index]
            outcomes.append(part)
        return outcomes

    def _score_alone(self, job: _Job) -> Results | BaseException:
        try:
            return score_and_observe(job.detector, job.metrics, job.inputs, job.explain)
        except Exception as exc:
            return exc


async def score_body(state: ServiceState, detector: Detector, metrics: ModelMetrics, body: RequestBody) -> Results:
    """Results for a `/score` body on the request's model snapshot: small bodies of kinds that allow
    it (tabular) through the micro-batcher, everything else (large batches, images) directly on the
    compute thread.

    Small bodies are checked on the event loop (a few µs per record) so a bad one fails alone;
    large ones and images (decoding is CPU work) are checked on the compute thread, leaving the loop free.
    """
    batcher = state.batcher
    max_pixels = input_limits(state.settings)
    if batcher is not None and detector.kind.micro_batch and body.size() <= batcher.max_records:
        return await batcher.score(detector, metrics, check_inputs(detector, body, max_pixels), body.explain)
    return await state.compute(
        lambda: score_and_observe(detector, metrics, check_inputs(detector, body, max_pixels), body.explain)
    )
