"""Inference overload: ~10x capacity for a bounded time against a real inference process.

``mlaas4hep serve --only inference`` serves a deliberately heavy MLP (V2 binary requests of
1024 rows) with a small queue (``max_queue_size: 2``). The test measures the capacity with
two closed-loop clients (enough to keep it busy), then offers ten times that rate open-loop
(each request on its own, whatever the answers) over a pool of keep-alive connections for
``OVERLOAD_S`` seconds while a probe checks liveness. Expected: the server keeps answering,
sheds with 503 (or 429) at once instead of queueing without bound, the requests it accepts
stay fast (p99 bounded), no other 5xx, no connection errors, it serves normally right
afterwards and its resident memory is back to flat.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import numpy as np
import pytest
from hardening_servers import MODEL_SCOPES, Service

from mlaas4hep.serve.samples import write_sample_model

MODEL = "heavy"
LAYERS = (42, 2048, 2048, 1)
ROWS = 1024
QUEUE = 2
WARMUP_S = 3.0
OVERLOAD_S = 10.0
FACTOR = 10.0
MAX_IN_FLIGHT = 2000
CONNECTIONS = 64
P99_BOUND_S = 2.0
RSS_GROWTH = 0.30
CREEP = 0.05  # growth allowed from one overload round to the next


def binary_request(rows: int) -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(1).normal(size=(rows, LAYERS[0])).astype(np.float32)
    header = {
        "inputs": [
            {
                "name": "features",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ]
    }
    head = json.dumps(header).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


@dataclass
class Record:
    statuses: Counter[int] = field(default_factory=Counter)
    accepted_s: list[float] = field(default_factory=list)
    shed_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class Sent:
    """Filled by the trace hook: when the request headers went out on a connection."""

    at: float | None = None


async def _headers_sent(_s: object, ctx: SimpleNamespace, _p: object) -> None:
    if isinstance(ctx.trace_request_ctx, Sent):
        ctx.trace_request_ctx.at = time.perf_counter()


def session(connections: int) -> aiohttp.ClientSession:
    """A client session with a bounded connection pool and the send-time hook."""
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60),
        connector=aiohttp.TCPConnector(limit=connections),
        trace_configs=[trace],
    )


class Load:
    """Sends the heavy request; latency counts from the moment it went out on a connection
    (waiting for a free connection in the client's own pool is the client's queue)."""

    def __init__(self, url: str, token: str) -> None:
        self.base = url
        self.url = f"{url}/v2/models/{MODEL}/infer"
        self.body, extra = binary_request(ROWS)
        self.headers = {"Authorization": f"Bearer {token}", **extra}

    async def one(self, client: aiohttp.ClientSession, rec: Record) -> None:
        sent = Sent()
        try:
            async with client.post(
                self.url, data=self.body, headers=self.headers, trace_request_ctx=sent
            ) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.errors[type(exc).__name__] += 1
            return
        seconds = time.perf_counter() - (sent.at or time.perf_counter())
        rec.statuses[status] += 1
        if status == 200:
            rec.accepted_s.append(seconds)
        elif status in (429, 503):
            rec.shed_s.append(seconds)

    async def connect(self, client: aiohttp.ClientSession, n: int) -> None:
        """Open *n* keep-alive connections up front (no connection set-up under load)."""

        async def get() -> None:
            async with client.get(f"{self.base}/v2/health/live") as r:
                await r.read()

        await asyncio.gather(*(get() for _ in range(n)))

    async def closed_loop(self, client: aiohttp.ClientSession, clients: int, seconds: float):
        rec = Record()
        end = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < end:
                await self.one(client, rec)

        await asyncio.gather(*(loop() for _ in range(clients)))
        return rec

    async def open_loop(self, client: aiohttp.ClientSession, rate: float, seconds: float):
        """Start ``rate`` requests a second for ``seconds``, not waiting for answers."""
        rec = Record()
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) < start + seconds:
            due = int((now - start) * rate) - sent
            for _ in range(due):
                if len(tasks) >= MAX_IN_FLIGHT:
                    rec.errors["client_in_flight_cap"] += 1
                    continue
                task = asyncio.create_task(self.one(client, rec))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent += max(due, 0)
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        return rec, sent / seconds


async def probe(url: str, stop: asyncio.Event, out: list[tuple[int, float]]) -> None:
    """GET /v2/health/live every 0.25 s: (status, seconds)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                async with session.get(f"{url}/v2/health/live") as r:
                    await r.read()
                    out.append((r.status, time.perf_counter() - start))
            except (aiohttp.ClientError, TimeoutError):
                out.append((0, time.perf_counter() - start))
            await asyncio.sleep(0.25)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@pytest.fixture
def server(tmp_path: Path):
    repo = tmp_path / "models"
    write_sample_model(repo / MODEL / "1", LAYERS, seed=3)
    batching = {"max_batch_size": 2 * ROWS, "max_queue_size": QUEUE}
    (repo / MODEL / "config.json").write_text(json.dumps({"batching": batching}))
    config = {"inference": {"repository": str(repo), "intra_op_threads": 1, "poll_interval_s": 0}}
    srv = Service(tmp_path / "srv", config, only="inference").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_overload_is_shed_and_the_server_stays_healthy(server: Service, figures) -> None:
    load = Load(server.url, server.token("loadtest", MODEL_SCOPES))
    result = asyncio.run(drive(load, server))
    warm, over, after, health = result["warm"], result["over"], result["after"], result["health"]
    capacity = warm.statuses[200] / WARMUP_S

    assert not warm.errors, warm.errors
    assert set(warm.statuses) == {200}, warm.statuses
    assert capacity > 0
    # Kept answering: every request got an HTTP answer, only 200 or a shed status.
    assert not +over.errors, over.errors
    assert set(over.statuses) <= {200, 429, 503}, over.statuses
    shed = over.statuses[503] + over.statuses[429]
    assert shed > 0, over.statuses
    assert over.statuses[200] > 0
    assert pct(over.accepted_s, 99) < P99_BOUND_S
    assert all(status == 200 for status, _ in health), health
    assert max(s for _, s in health) < P99_BOUND_S
    # Back to normal right after, and memory flat.
    assert set(after.statuses) == {200}, after.statuses
    rss0, fds0 = result["before"]
    rss1, fds1 = result["end"]
    assert rss1 <= rss0 * (1 + RSS_GROWTH), (rss0, rss1)
    assert fds1 <= fds0 + 4, (fds0, fds1)
    again, (rss2, fds2) = result["again"], result["second"]
    assert set(again.statuses) <= {200, 429, 503}, again.statuses
    assert rss2 <= rss1 * (1 + CREEP) + 8 * 2**20, (rss1, rss2)
    assert fds2 <= fds0 + 4, (fds0, fds2)
    assert server.alive()

    total = sum(over.statuses.values())
    figures.record(
        "overload",
        model=f"MLP {'x'.join(map(str, LAYERS))}, {ROWS} rows per request, V2 binary",
        client_connections=CONNECTIONS,
        queue_limit_requests=QUEUE,
        capacity_rps=round(capacity, 1),
        offered_rps=round(result["offered"], 1),
        overload_s=OVERLOAD_S,
        answered=total,
        accepted=over.statuses[200],
        shed=shed,
        shed_fraction=round(shed / total, 3),
        goodput_vs_capacity=round(over.statuses[200] / OVERLOAD_S / capacity, 2),
        accepted_p50_s=round(pct(over.accepted_s, 50), 3),
        accepted_p99_s=round(pct(over.accepted_s, 99), 3),
        shed_p99_s=round(pct(over.shed_s, 99), 3),
        health_probes=len(health),
        health_max_s=round(max(s for _, s in health), 3),
        rss_before_mb=round(rss0 / 2**20, 1),
        rss_after_mb=round(rss1 / 2**20, 1),
        rss_growth=round(rss1 / rss0 - 1, 3),
        fds_before=fds0,
        fds_after=fds1,
        rss_after_second_round_mb=round(rss2 / 2**20, 1),
    )


async def drive(load: Load, server: Service) -> dict[str, object]:
    # Resources are read with no client connected, so open sockets do not count.
    async with session(4) as client:
        # Three clients make batches of the largest size: ORT's arena reaches its working size.
        await load.closed_loop(client, 3, 1.5)
        warm = await load.closed_loop(client, 2, WARMUP_S)
    await asyncio.sleep(0.5)
    before = server.resources()
    capacity = warm.statuses[200] / WARMUP_S
    async with session(CONNECTIONS) as client:
        await load.connect(client, CONNECTIONS)
        stop = asyncio.Event()
        health: list[tuple[int, float]] = []
        prober = asyncio.create_task(probe(server.url, stop, health))
        over, offered = await load.open_loop(client, FACTOR * capacity, OVERLOAD_S)
        stop.set()
        await prober
    await asyncio.sleep(2.0)
    async with session(4) as client:
        after = await load.closed_loop(client, 2, 2.0)
    await asyncio.sleep(1.0)
    end = server.resources()
    # A second, shorter round: memory must not creep up round after round.
    async with session(CONNECTIONS) as client:
        await load.connect(client, CONNECTIONS)
        again, _ = await load.open_loop(client, FACTOR * capacity, OVERLOAD_S / 2)
    await asyncio.sleep(1.0)
    second = server.resources()
    return {
        "warm": warm,
        "over": over,
        "after": after,
        "health": health,
        "offered": offered,
        "before": before,
        "end": end,
        "again": again,
        "second": second,
    }
