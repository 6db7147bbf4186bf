"""The deployment pool over real HTTP against several emulators, each with its own quota.

The service enforces a deployment's requests-per-minute over short windows: Microsoft's
quota how-to (learn.microsoft.com/azure/ai-services/openai/how-to/quota) gives the example
of a 600-RPM deployment throttled when more than 10 requests arrive in one 1-second period,
and a Microsoft answer on Q&A (learn.microsoft.com/answers/questions/1336515) names 1 or 10
seconds. Each emulator here does the same, so a pool that sends one deployment more than
its share is throttled and the test sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from imgrag import ConfigError, ConnectorError, EmbedderError, load_settings
from imgrag.connectors.config import DeploymentConfig, EmbedderConfig
from imgrag.connectors.embedder import Embedding
from imgrag.connectors.emulator import EmulatorHandle, EmulatorOptions, running_emulator
from imgrag.connectors.factory import create_embedder
from imgrag.connectors.foundry import FoundryEmbedder, FoundryPool
from imgrag.connectors.paths import StatePaths
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.status import StatusReport, deployment_lines
from pydantic import SecretStr

from tests.conftest import EMULATOR_KEY
from tests.foundry_helpers import images
from tests.ingest_harness import until

WINDOWS = [1.0, 10.0]


def start(stack: ExitStack, **options: object) -> EmulatorHandle:
    base = {"api_key": SecretStr(EMULATOR_KEY), "backend": "tiny", "rate_windows": WINDOWS}
    return stack.enter_context(running_emulator(EmulatorOptions(**(base | options))))  # type: ignore[arg-type]  # keys are EmulatorOptions fields


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def pool_config(handles: list[EmulatorHandle], rpms: list[int], **extra: object) -> EmbedderConfig:
    return EmbedderConfig(
        provider="foundry",
        api_key=SecretStr(EMULATOR_KEY),
        max_concurrency=4,
        deployments=[
            DeploymentConfig(name=f"d{i}", endpoint=h.url, requests_per_minute=rpm)
            for i, (h, rpm) in enumerate(zip(handles, rpms, strict=True))
        ],
        **extra,  # type: ignore[arg-type]  # each test passes valid [embedder] keys
    )


def served(handle: EmulatorHandle) -> int:
    """Embedding requests the emulator answered with success."""
    return sum(1 for r in handle.state.requests if r.route == "images" and r.status == 200)


async def test_a_single_endpoint_is_not_a_pool(tmp_path: Path) -> None:
    """``[embedder] endpoint`` alone keeps the single sender; deployments make a pool."""
    key = SecretStr(EMULATOR_KEY)
    config = EmbedderConfig(provider="foundry", endpoint="http://127.0.0.1:9/models", api_key=key)
    single = create_embedder(config, StatePaths.under(tmp_path))
    assert isinstance(single, FoundryEmbedder)
    config.deployments = [DeploymentConfig(endpoint="http://127.0.0.1:9/models")]
    pool = create_embedder(config, StatePaths.under(tmp_path))
    assert isinstance(pool, FoundryPool) and len(pool.members) == 1
    await single.aclose()
    await pool.aclose()


async def test_requests_go_where_quota_is_free(stack: ExitStack) -> None:
    rpms = [120, 240, 360]
    handles = [start(stack, rpm=rpm) for rpm in rpms]
    pool = FoundryPool(pool_config(handles, rpms))
    try:
        await pool.probe()
        for h in handles:
            h.state.reset()
        batch = images(1)
        await asyncio.gather(*(pool.embed_images(batch, "document") for _ in range(72)))
        usage = pool.usage
    finally:
        await pool.aclose()
    counts = [served(h) for h in handles]
    assert sum(counts) == 72
    # Shares follow the quotas (1/6, 2/6, 3/6), not an even split or one deployment.
    for count, rpm in zip(counts, rpms, strict=True):
        assert abs(count / 72 - rpm / sum(rpms)) < 0.1, counts
    # Each sender paces to its quota; a 429 or two come only from loopback jitter moving a
    # request into the previous 1 s window on a loaded machine.
    assert usage.throttled <= 0.1 * usage.requests, f"over quota: {usage.deployments}"
    assert [d.name for d in usage.deployments] == ["d0", "d1", "d2"]


async def send_until(pool: FoundryPool, condition: Callable[[], bool], what: str) -> int:
    """Keep embedding one image at a time until ``condition()`` holds (a deployment is
    probed only while work flows); returns how many were sent. Fails after 20 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    sent = 0
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await pool.embed_images(images(1), "document")
        sent += 1
    return sent


async def test_a_throttled_deployment_sheds_load(stack: ExitStack) -> None:
    """A 429 asking for a 10 s wait at one deployment: while it waits, new work goes to the
    other instead of queueing behind the pause."""
    handles = [start(stack), start(stack)]
    pool = FoundryPool(pool_config(handles, [600, 600]))
    try:
        await pool.probe()
        for h in handles:
            h.state.reset()
        handles[0].state.inject(429, retry_after=10)  # far longer than the 20 take at d1

        def throttled() -> bool:
            return any(r.status == 429 for r in handles[0].state.requests)

        sent: list[asyncio.Task[list[Embedding]]] = []
        while not throttled():  # until one request has reached d0 and its 429
            task = asyncio.create_task(pool.embed_images(images(1), "document"))
            sent.append(task)
            await until(lambda: task.done() or throttled(), what="an answer")  # noqa: B023
        before = served(handles[1])
        await asyncio.gather(*(pool.embed_images(images(1), "document") for _ in range(20)))
        assert served(handles[0]) == 0 and served(handles[1]) == before + 20
        assert all(len(x) == 1 for x in await asyncio.gather(*sent))
        assert served(handles[0]) == 1  # the throttled request itself waited and landed
    finally:
        await pool.aclose()


async def test_a_failing_deployment_is_taken_out_and_comes_back(stack: ExitStack) -> None:
    handles = [start(stack), start(stack)]
    pool = FoundryPool(pool_config(handles, [1200, 1200]))
    try:
        await pool.probe()
        handles[0].state.options.fail_rate = 1.0  # every request there: 500 or 503
        batch = images(1)
        out = await asyncio.gather(*(pool.embed_images(batch, "document") for _ in range(20)))
        assert all(len(o) == 1 for o in out), "a request was lost to the failing deployment"
        d0 = pool.usage.deployments[0]
        assert not d0.healthy and d0.failures >= 1
        before = served(handles[0])
        handles[0].state.options.fail_rate = 0.0
        await send_until(pool, lambda: pool.usage.deployments[0].healthy, "d0 back in service")
        await asyncio.gather(*(pool.embed_images(batch, "document") for _ in range(20)))
        assert served(handles[0]) > before + 1, "put back but never used again"
    finally:
        await pool.aclose()


async def test_a_stopped_deployment_loses_nothing_and_returns(stack: ExitStack) -> None:
    keep = start(stack)
    gone = ExitStack()
    going = start(gone)
    port = going.port
    pool = FoundryPool(pool_config([going, keep], [1200, 1200]))
    await pool.probe()
    await asyncio.to_thread(gone.close)  # the server stops; its port closes
    try:
        batch = images(1)
        out = await asyncio.gather(*(pool.embed_images(batch, "document") for _ in range(10)))
        assert len(out) == 10 and not pool.usage.deployments[0].healthy
        back = start(stack, port=port)
        await send_until(pool, lambda: pool.usage.deployments[0].healthy, "the restart back")
        await asyncio.gather(*(pool.embed_images(batch, "document") for _ in range(10)))
        assert served(back) >= 2  # the probe and real work
    finally:
        await pool.aclose()


async def test_a_rejected_key_takes_a_deployment_out(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    handles = [start(stack), start(stack, api_key=SecretStr("another-key"))]
    monkeypatch.setenv("POOL_KEY_B", "wrong-key")
    config = pool_config(handles, [600, 600])
    config.deployments[1].api_key_env = "POOL_KEY_B"
    pool = FoundryPool(config)
    try:
        await pool.probe()
        out = await asyncio.gather(*(pool.embed_images(images(1), "document") for _ in range(5)))
        assert len(out) == 5
        d1 = pool.usage.deployments[1]
        assert not d1.healthy and "credential" in pool.members[1].last_error
    finally:
        await pool.aclose()


async def test_deployments_of_different_models_are_refused(stack: ExitStack) -> None:
    """Both answer to the deployment name "embedder"; /info tells what each one serves."""
    handles = [
        start(stack, deployments=["embedder"]),
        start(stack, model="embed-v-4-0", deployments=["embedder"]),
    ]
    pool = FoundryPool(pool_config(handles, [600, 600], model="embedder"))
    try:
        with pytest.raises(EmbedderError) as caught:
            await pool.probe()
    finally:
        await pool.aclose()
    said = str(caught.value)
    assert "\n" not in said
    assert "Cohere-embed-v3-english" in said and "embed-v-4-0" in said
    assert "d0" in said and "d1" in said


async def test_status_and_metrics_show_each_deployment(stack: ExitStack) -> None:
    handles = [start(stack), start(stack)]
    pool = FoundryPool(pool_config(handles, [1200, 1200]))
    try:
        await pool.probe()
        handles[1].state.inject(429, retry_after=0.2)
        await asyncio.gather(*(pool.embed_images(images(1), "document") for _ in range(12)))
        usage = pool.usage
    finally:
        await pool.aclose()
    report = StatusReport(indexed=0, pending=0, failed=0, usage=usage)
    text = Metrics(lambda: report).render().decode()
    for i, h in enumerate(handles):
        sent = sum(1 for r in h.state.requests if r.route == "images")
        assert f'imgrag_deployment_requests_total{{deployment="d{i}"}} {float(sent)}' in text
        assert f'imgrag_deployment_healthy{{deployment="d{i}"}} 1.0' in text
    assert 'imgrag_deployment_throttled_total{deployment="d1"} 1.0' in text
    shares = [d.share for d in usage.deployments]
    assert abs(sum(shares) - 1) < 0.01 and all(s > 0 for s in shares)
    lines = deployment_lines(usage)
    assert len(lines) == 2 and "d1" in lines[1] and "1 throttled" in lines[1]


def test_the_pool_is_read_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's layout parses; an unknown key in an entry is one line naming it."""
    monkeypatch.delenv("AZURE_INFERENCE_ENDPOINT", raising=False)
    path = tmp_path / "pool.toml"
    path.write_text(
        '[embedder]\nprovider = "foundry"\nmodel = "cohere-embed"\n'
        '[[embedder.deployments]]\nname = "east"\n'
        'endpoint = "https://a.services.ai.azure.com/models"\n'
        'api_key_env = "KEY_EAST"\nrequests_per_minute = 400\n'
        '[[embedder.deployments]]\nname = "west"\n'
        'endpoint = "https://b.services.ai.azure.com"\nauth = "entra"\nmax_concurrency = 12\n'
    )
    embedder = load_settings(path).embedder
    assert [d.name for d in embedder.deployments] == ["east", "west"]
    assert embedder.deployments[0].requests_per_minute == 400
    assert embedder.deployments[1].auth == "entra"
    path.write_text(
        '[embedder]\nprovider = "foundry"\n[[embedder.deployments]]\n'
        'endpoint = "https://a.services.ai.azure.com"\nrpm = 400\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "rpm" in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOL_KEY_NOWHERE", raising=False)
    entry = DeploymentConfig(name="east", endpoint="http://127.0.0.1:9/models")
    entry.api_key_env = "POOL_KEY_NOWHERE"
    config = EmbedderConfig(provider="foundry", deployments=[entry])
    with pytest.raises(ConnectorError) as caught:
        FoundryPool(config)
    said = str(caught.value)
    assert "east" in said and "POOL_KEY_NOWHERE" in said and "\n" not in said


async def test_a_deployment_down_at_start_must_serve_the_pools_model(stack: ExitStack) -> None:
    """Down at start, a deployment is probed when it comes up; serving another model than
    the pool (its /info says so), it stays out and says why, and no work goes there."""
    keep = start(stack, deployments=["embedder"])
    gone = ExitStack()
    port = start(gone).port
    await asyncio.to_thread(gone.close)  # nothing listens there at start
    config = pool_config([keep, keep], [1200, 1200], model="embedder")
    config.deployments[1].endpoint = f"http://127.0.0.1:{port}/models"
    pool = FoundryPool(config)
    try:
        await pool.probe()
        assert not pool.usage.deployments[1].healthy
        other = start(stack, port=port, model="embed-v-4-0", deployments=["embedder"])
        member = pool.members[1]

        def probed() -> bool:
            return "embed-v-4-0" in member.last_error and member.probing is None

        await send_until(pool, probed, "a probe of the restarted deployment")
        await asyncio.gather(*(pool.embed_images(images(1), "document") for _ in range(10)))
        assert not pool.usage.deployments[1].healthy
        assert served(other) <= 1  # at most the probe's own embedding
    finally:
        await pool.aclose()
