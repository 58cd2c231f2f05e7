"""ledger's chain client through a provider-like proxy (ledger.testing.provider) in
front of the session's real Anvil: rate limits, dropped connections, slow answers,
and ``eth_getLogs`` caps. Every answer is compared with the one Anvil gives directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.chain.abi import registry_abi
from ledger.chain.anvil import rpc_call
from ledger.chain.logs import forget_learned_caps, learned_cap, scan_logs
from ledger.chain.rpc import JsonRpc, RetryPolicy
from ledger.errors import ChainError, ChainUnavailableError, RpcError
from ledger.testing.provider import ProviderProxy, ProviderRules
from tests.conftest import Chain
from tests.testing.test_provider import manifest_digest


class FakeTime:
    """A clock the proxy's token bucket reads and the client's waits advance."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _no_learned_caps() -> Iterator[None]:
    forget_learned_caps()
    yield
    forget_learned_caps()


@pytest.fixture
def proxy(chain: Chain) -> Iterator[ProviderProxy]:
    with ProviderProxy(chain.rpc_url) as proxy:
        yield proxy


def spread_events(chain: Chain, groups: int = 5, per_group: int = 3, gap: int = 40) -> None:
    """``groups`` transactions of ``per_group`` RunStarted events, ``gap`` blocks apart."""
    for _ in range(groups):
        chain.registry.start_runs([(manifest_digest(), ()) for _ in range(per_group)])
        rpc_call(chain.rpc_url, "anvil_mine", [hex(gap)])


def query(chain: Chain) -> dict[str, object]:
    return {"address": chain.registry.address, "topics": [registry_abi().event_topic("RunStarted")]}


def scanned(rpc: JsonRpc, chain: Chain, end: int | None = None) -> list[dict[str, object]]:
    return [
        log for _, logs in scan_logs(rpc, query(chain), chain.deploy_block, end) for log in logs
    ]


# -- the transport --------------------------------------------------------------------


def test_429_is_waited_out_as_retry_after_says(chain: Chain) -> None:
    clock = FakeTime()
    rules = ProviderRules(rate=0.5, burst=2)
    with ProviderProxy(chain.rpc_url, rules, clock=clock) as proxy:
        rpc = JsonRpc(proxy.url, sleep=clock.sleep)
        heads = [rpc("eth_blockNumber") for _ in range(5)]
        direct = rpc_call(chain.rpc_url, "eth_blockNumber")
        assert heads == [direct] * 5
        assert proxy.events["throttled"] == 3  # calls 3, 4 and 5 waited for a token each
        assert clock.waits == [2.0, 2.0, 2.0]  # Retry-After: one token at 0.5 a second
        assert proxy.calls["eth_blockNumber"] == 8


def test_a_batch_is_sent_again_after_429(chain: Chain) -> None:
    clock = FakeTime()
    with ProviderProxy(chain.rpc_url, ProviderRules(rate=1.0, burst=1), clock=clock) as proxy:
        rpc = JsonRpc(proxy.url, sleep=clock.sleep)
        rpc("eth_chainId")
        answers = rpc.batch([("eth_chainId", []), ("eth_blockNumber", [])])
        assert answers[0] == hex(31337) and proxy.events["throttled"] == 1


def test_endless_429_ends_in_a_clear_error(chain: Chain) -> None:
    clock = FakeTime()
    with ProviderProxy(chain.rpc_url, ProviderRules(rate=0.001, burst=1), clock=clock) as proxy:
        rpc = JsonRpc(proxy.url, sleep=clock.sleep)
        rpc("eth_chainId")
        with pytest.raises(ChainUnavailableError) as caught:
            rpc("eth_chainId")
        message = str(caught.value)
        assert proxy.url in message and "429" in message and "request rate" in message
        assert caught.value.hint and "LEDGER_RPC_URL" in caught.value.hint
        # each wait capped at max_wait, all of them within the budget
        policy = RetryPolicy()
        assert clock.waits and max(clock.waits) <= policy.max_wait
        assert sum(clock.waits) <= policy.budget


def test_reads_survive_dropped_connections(chain: Chain) -> None:
    rpc_call(chain.rpc_url, "anvil_mine", [hex(12)])
    with ProviderProxy(chain.rpc_url, ProviderRules(drop_rate=0.3, seed=3)) as proxy:
        rpc = JsonRpc(proxy.url, sleep=lambda _s: None)
        blocks = [rpc("eth_getBlockByNumber", hex(n), False)["hash"] for n in range(12)]
        batch = list(rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(12)]))
        assert proxy.events["dropped"] > 0
    direct = [rpc_call(chain.rpc_url, "eth_getBlockByNumber", [hex(n), False]) for n in range(12)]
    assert blocks == [b["hash"] for b in direct]
    assert [b["hash"] for b in batch] == blocks


def test_a_state_changing_call_is_not_sent_twice(chain: Chain) -> None:
    """anvil_mine is not idempotent: a dropped answer is an error, not a second send."""
    before = int(rpc_call(chain.rpc_url, "eth_blockNumber"), 16)
    with ProviderProxy(chain.rpc_url, ProviderRules(drop_rate=1.0)) as proxy:
        rpc = JsonRpc(proxy.url, sleep=lambda _s: None)
        with pytest.raises(ChainUnavailableError) as caught:
            rpc("anvil_mine", "0x2")
        assert proxy.url in str(caught.value)
        assert proxy.calls["anvil_mine"] == 1
    assert int(rpc_call(chain.rpc_url, "eth_blockNumber"), 16) == before + 2


def test_reads_that_keep_failing_end_in_a_clear_error(chain: Chain) -> None:
    with ProviderProxy(chain.rpc_url, ProviderRules(drop_rate=1.0)) as proxy:
        waits: list[float] = []
        rpc = JsonRpc(proxy.url, sleep=waits.append)
        with pytest.raises(ChainUnavailableError) as caught:
            rpc("eth_chainId")
        assert "after 5 tries" in str(caught.value) and proxy.url in str(caught.value)
        assert proxy.calls["eth_chainId"] == 5
        assert waits == [0.25, 0.5, 1.0, 2.0]


def test_timeouts_of_slow_answers_are_retried(chain: Chain) -> None:
    rules = ProviderRules(slow_rate=0.4, slow_seconds=0.6, seed=1)
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        rpc = JsonRpc(proxy.url, timeout=0.3, sleep=lambda _s: None)
        assert [rpc("eth_chainId") for _ in range(6)] == [hex(31337)] * 6
        assert proxy.events["slowed"] > 0


def test_a_refused_connection_fails_at_once() -> None:
    from ledger.chain.anvil import free_port

    waits: list[float] = []
    rpc = JsonRpc(f"http://127.0.0.1:{free_port()}", sleep=waits.append)
    with pytest.raises(ChainUnavailableError):
        rpc("eth_chainId")
    assert waits == []


def test_a_413_json_rpc_error_is_the_calls_error(chain: Chain, proxy: ProviderProxy) -> None:
    proxy.configure(max_log_blocks=1)
    rpc = JsonRpc(proxy.url)
    params = {"fromBlock": "0x0", "toBlock": "0x5"}
    with pytest.raises(RpcError) as caught:
        rpc("eth_getLogs", params)
    assert caught.value.code == -32614
    assert "eth_getLogs is limited to a 1 range" in str(caught.value)


# -- eth_getLogs over any range ---------------------------------------------------------


@pytest.mark.parametrize("style", ["quicknode", "infura"])
def test_scans_split_on_block_caps_and_remember_them(
    chain: Chain, proxy: ProviderProxy, style: str
) -> None:
    spread_events(chain)
    direct = scanned(JsonRpc(chain.rpc_url), chain)
    assert len(direct) == 15
    proxy.configure(max_log_blocks=50, range_style=style)
    rpc = JsonRpc(proxy.url)
    assert scanned(rpc, chain) == direct
    assert learned_cap(proxy.url) == 50  # the number the refusal named
    refused = proxy.events["refused_range"]
    assert refused >= 1
    # the next scan starts at the learned width: no refusal
    assert scanned(rpc, chain) == direct
    assert proxy.events["refused_range"] == refused
    # an explicit end, and a start past every event
    head = int(rpc_call(chain.rpc_url, "eth_blockNumber"), 16)
    assert scanned(rpc, chain, head) == direct
    assert [log for _, chunk in scan_logs(rpc, query(chain), head) for log in chunk] == []


def test_scans_split_on_result_caps_with_the_hint(chain: Chain, proxy: ProviderProxy) -> None:
    spread_events(chain, groups=4, per_group=3, gap=5)
    direct = scanned(JsonRpc(chain.rpc_url), chain)
    proxy.configure(max_log_results=4)
    assert scanned(JsonRpc(proxy.url), chain) == direct
    assert proxy.events["refused_results"] >= 1
    assert learned_cap(proxy.url) is None  # a result cap depends on the range's density


def test_both_caps_and_bursts_and_drops_together(chain: Chain) -> None:
    spread_events(chain, groups=6, per_group=2, gap=30)
    direct = scanned(JsonRpc(chain.rpc_url), chain)
    clock = FakeTime()
    rules = ProviderRules(
        max_log_blocks=50, max_log_results=3, rate=20, burst=4, drop_rate=0.2, seed=11
    )
    with ProviderProxy(chain.rpc_url, rules, clock=clock) as proxy:
        assert scanned(JsonRpc(proxy.url, sleep=clock.sleep), chain) == direct
        events = proxy.events
        assert events["refused_range"] and events["refused_results"]
        assert events["throttled"] and events["dropped"]


def test_a_block_with_more_logs_than_the_cap_is_a_clear_error(
    chain: Chain, proxy: ProviderProxy
) -> None:
    chain.registry.start_runs([(manifest_digest(), ()) for _ in range(5)])
    proxy.configure(max_log_results=4)
    with pytest.raises(ChainError) as caught:
        scanned(JsonRpc(proxy.url), chain)
    assert "refuses even block" in str(caught.value) and proxy.url in str(caught.value)
    assert caught.value.hint and "endpoint" in caught.value.hint


def test_an_error_splitting_cannot_cure_is_raised_as_is(chain: Chain, proxy: ProviderProxy) -> None:
    rpc = JsonRpc(proxy.url)
    bad = {"address": "0x1234", "topics": []}
    with pytest.raises(RpcError):
        list(scan_logs(rpc, bad, 0))
    assert proxy.calls["eth_getLogs"] == 1


# -- refusals other providers word differently -------------------------------------------


def refusal(message: str, code: int = -32602, data: object = None) -> RpcError:
    return RpcError(
        f"eth_getLogs failed at http://node:8545: {message}",
        code=code,
        data=data,
        node_message=message,
    )


@pytest.mark.parametrize(
    ("error", "width", "learned"),
    [
        # Alchemy names a range that fits in its message
        (
            refusal(
                "Log response size exceeded. You can make eth_getLogs requests with up to a 2K "
                "block range and no limit on the response size, or you can request any block "
                "range with a cap of 10K logs in the response. Based on your parameters, this "
                "block range should work: [0x64, 0x95]"
            ),
            0x95 - 100 + 1,
            None,
        ),
        # a range refusal without a number: halved, and remembered
        (refusal("block range too high", code=-32600), 500, 500),
        # a number in the message that is not below the refused width: halved
        (refusal("exceed maximum block range: 5000", code=-32000), 500, 500),
        (refusal("range 1000 exceeds limit of 100"), 100, 100),
        # Infura's result cap with its data hint
        (
            refusal(
                "query returned more than 10000 results", -32005, {"from": "0x64", "to": "0x6e"}
            ),
            11,
            None,
        ),
    ],
)
def test_refusals_name_the_next_width(error: RpcError, width: int, learned: int | None) -> None:
    from ledger.chain.logs import _narrower

    assert _narrower("http://node:8545", error, 100, 1099) == width
    assert learned_cap("http://node:8545") == learned
