"""The provider-like proxy itself, spoken to over plain ``http.client`` (not ledger's
own transport, whose coping is tested in tests/chain/test_provider.py), in front of
the session's real Anvil."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.chain.abi import registry_abi
from ledger.chain.anvil import rpc_call
from ledger.testing.provider import ProviderProxy, ProviderRules, TokenBucket
from tests.conftest import Chain
from tests.runs import manifest


def post(url: str, body: object) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection: status, headers (lower-case), parsed JSON."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("POST", "/", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, json.loads(data)
    finally:
        conn.close()


def get_logs(address: str, start: int | str, end: int | str, id_: int = 1) -> dict[str, Any]:
    """``eth_getLogs`` of the registry's RunStarted events over [start, end]."""

    def block(value: int | str) -> str:
        return hex(value) if isinstance(value, int) else value

    query = {
        "address": address,
        "fromBlock": block(start),
        "toBlock": block(end),
        "topics": [registry_abi().event_topic("RunStarted")],
    }
    return {"jsonrpc": "2.0", "id": id_, "method": "eth_getLogs", "params": [query]}


def head(url: str) -> int:
    return int(str(rpc_call(url, "eth_blockNumber")), 16)


@pytest.fixture
def proxy(chain: Chain) -> Iterator[ProviderProxy]:
    with ProviderProxy(chain.rpc_url) as proxy:
        yield proxy


@pytest.fixture
def busy_chain(chain: Chain) -> Chain:
    """The registry with 3 blocks of 4 RunStarted events each, 30 empty blocks apart."""
    for _ in range(3):
        chain.registry.start_runs([(manifest_digest(), ()) for _ in range(4)])
        rpc_call(chain.rpc_url, "anvil_mine", [hex(30)])
    return chain


def manifest_digest() -> bytes:
    from ledger.documents import canonical_json
    from ledger.hashing.cid import bytes_cid

    return bytes_cid(canonical_json(manifest("p"))).digest


def test_range_limit_refuses_like_quicknode(busy_chain: Chain, proxy: ProviderProxy) -> None:
    proxy.configure(max_log_blocks=50)
    address = busy_chain.registry.address
    end = head(busy_chain.rpc_url)
    status, _, answer = post(proxy.url, get_logs(address, end - 50, end))
    assert status == 413
    assert answer["error"] == {"code": -32614, "message": "eth_getLogs is limited to a 50 range"}
    assert answer["id"] == 1
    # exactly 50 blocks pass, and answer what the node answers
    status, _, answer = post(proxy.url, get_logs(address, end - 49, end))
    assert status == 200
    _, _, direct = post(busy_chain.rpc_url, get_logs(address, end - 49, end))
    assert answer["result"] == direct["result"]
    # tags count too: from the deploy block to "latest" is too wide
    status, _, answer = post(proxy.url, get_logs(address, busy_chain.deploy_block, "latest"))
    assert status == 413
    assert proxy.events["refused_range"] == 2
    assert proxy.calls["eth_getLogs"] == 3


def test_range_limit_refuses_like_infura(busy_chain: Chain, proxy: ProviderProxy) -> None:
    proxy.configure(max_log_blocks=10, range_style="infura")
    status, _, answer = post(proxy.url, get_logs(busy_chain.registry.address, 0, "latest"))
    assert status == 200
    width = head(busy_chain.rpc_url) + 1
    assert answer["error"] == {"code": -32602, "message": f"range {width} exceeds limit of 10"}


def test_a_block_hash_query_has_no_range(busy_chain: Chain, proxy: ProviderProxy) -> None:
    proxy.configure(max_log_blocks=1)
    block = rpc_call(busy_chain.rpc_url, "eth_getBlockByNumber", ["latest", False])
    query = {"address": busy_chain.registry.address, "blockHash": block["hash"]}
    request = {"jsonrpc": "2.0", "id": 5, "method": "eth_getLogs", "params": [query]}
    status, _, answer = post(proxy.url, request)
    assert status == 200 and answer["result"] == []


def test_result_limit_refuses_with_a_range_hint(busy_chain: Chain, proxy: ProviderProxy) -> None:
    proxy.configure(max_log_results=6)
    address = busy_chain.registry.address
    start = busy_chain.deploy_block
    status, _, answer = post(proxy.url, get_logs(address, start, "latest"))
    assert status == 200
    error = answer["error"]
    assert error["code"] == -32005
    assert error["message"] == "query returned more than 6 results"
    # the hint: from the start to the block before the one holding the 7th log
    _, _, direct = post(busy_chain.rpc_url, get_logs(address, start, "latest"))
    blocks = sorted({int(log["blockNumber"], 16) for log in direct["result"]})
    assert len(direct["result"]) == 12 and len(blocks) == 3
    assert error["data"] == {"from": hex(start), "to": hex(blocks[1] - 1)}
    # the hinted range fits
    status, _, answer = post(proxy.url, get_logs(address, start, blocks[1] - 1))
    assert len(answer["result"]) == 4
    # exactly the limit passes: the two first blocks hold 8 > 6, one holds 4
    proxy.configure(max_log_results=8)
    status, _, answer = post(proxy.url, get_logs(address, start, blocks[1]))
    assert len(answer["result"]) == 8
    assert proxy.events["refused_results"] == 1


def test_batches_are_answered_call_by_call(busy_chain: Chain, proxy: ProviderProxy) -> None:
    proxy.configure(max_log_blocks=5)
    address = busy_chain.registry.address
    end = head(busy_chain.rpc_url)
    batch = [
        {"jsonrpc": "2.0", "id": 10, "method": "eth_chainId", "params": []},
        get_logs(address, 0, end, id_=11),
        get_logs(address, end - 4, end, id_=12),
    ]
    status, _, answers = post(proxy.url, batch)
    assert status == 200
    by_id = {a["id"]: a for a in answers}
    assert by_id[10]["result"] == hex(31337)
    assert by_id[11]["error"]["code"] == -32614
    assert by_id[12]["result"] == []
    assert proxy.calls == {"eth_chainId": 1, "eth_getLogs": 2}
    assert proxy.events["batches"] == 1 and proxy.events["http_requests"] == 1


def test_bursts_get_429_with_retry_after(chain: Chain) -> None:
    now = [0.0]
    rules = ProviderRules(rate=0.5, burst=2)
    with ProviderProxy(chain.rpc_url, rules, clock=lambda: now[0]) as proxy:
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        assert post(proxy.url, request)[0] == 200
        assert post(proxy.url, request)[0] == 200
        status, headers, answer = post(proxy.url, request)
        assert status == 429
        assert headers["retry-after"] == "2"  # one token at 0.5 a second
        assert answer["error"]["code"] == -32005
        now[0] += 2.0  # the bucket refilled one token
        assert post(proxy.url, request)[0] == 200
        assert post(proxy.url, request)[0] == 429
        assert proxy.events["throttled"] == 2
        assert proxy.calls["eth_chainId"] == 5


def test_token_bucket_never_holds_more_than_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(10.0, 3, lambda: now[0])
    now[0] = 1000.0
    assert [bucket.take() is None for _ in range(4)] == [True, True, True, False]


def drop_pattern(url: str, seed: int, requests: int) -> list[bool]:
    """Which of ``requests`` sequential calls came back without a whole answer."""
    pattern = []
    with ProviderProxy(url, ProviderRules(drop_rate=0.5, seed=seed)) as proxy:
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        for _ in range(requests):
            try:
                post(proxy.url, request)
            except (http.client.HTTPException, ConnectionError, json.JSONDecodeError):
                pattern.append(True)
            else:
                pattern.append(False)
        assert proxy.events["dropped"] == sum(pattern)
    return pattern


def test_dropped_connections_are_seeded(chain: Chain) -> None:
    first = drop_pattern(chain.rpc_url, 7, 24)
    assert first == drop_pattern(chain.rpc_url, 7, 24)
    assert 0 < sum(first) < 24
    assert first != drop_pattern(chain.rpc_url, 8, 24)


def test_a_dropped_request_was_still_processed(chain: Chain) -> None:
    before = head(chain.rpc_url)
    with ProviderProxy(chain.rpc_url, ProviderRules(drop_rate=1.0)) as proxy:
        request = {"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": ["0x3"]}
        with pytest.raises((http.client.HTTPException, ConnectionError, json.JSONDecodeError)):
            post(proxy.url, request)
    assert head(chain.rpc_url) == before + 3


def test_the_first_answer_of_named_methods_is_dropped(chain: Chain) -> None:
    """``drop_first``: the first call of each named method is processed and its
    answer lost, every later one answered, other methods untouched."""
    before = head(chain.rpc_url)
    rules = ProviderRules(drop_first=("anvil_mine",))
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        mine = {"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": ["0x2"]}
        with pytest.raises((http.client.HTTPException, ConnectionError, json.JSONDecodeError)):
            post(proxy.url, mine)
        assert post(proxy.url, mine)[0] == 200
        chain_id = {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId", "params": []}
        assert post(proxy.url, chain_id)[2]["result"] == hex(31337)
        assert proxy.dropped_calls == {"anvil_mine": 1}
    assert head(chain.rpc_url) == before + 4  # the dropped call was processed too


def test_slow_answers_are_counted_and_correct(chain: Chain) -> None:
    rules = ProviderRules(slow_rate=1.0, slow_seconds=0.05)
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        request = {"jsonrpc": "2.0", "id": 3, "method": "eth_chainId", "params": []}
        assert post(proxy.url, request)[2] == {"jsonrpc": "2.0", "id": 3, "result": hex(31337)}
        assert proxy.events["slowed"] == 1


def test_counters_over_http_and_reset(chain: Chain, proxy: ProviderProxy) -> None:
    post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    parts = urllib.parse.urlsplit(proxy.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("GET", "/counters")
    counters = json.loads(conn.getresponse().read())
    conn.close()
    assert counters["calls"] == {"eth_chainId": 1} and counters["dropped_calls"] == {}
    assert counters["events"]["http_requests"] == 1
    proxy.reset_counters()
    assert proxy.total_calls() == 0


def test_rules_set_restores_the_rules(proxy: ProviderProxy) -> None:
    with proxy.rules_set(max_log_blocks=3, drop_rate=0.1):
        assert proxy.rules.max_log_blocks == 3
    assert proxy.rules == ProviderRules()


def test_bad_requests_get_json_rpc_errors(proxy: ProviderProxy) -> None:
    _, _, answer = post(proxy.url, [])
    assert answer["error"]["code"] == -32600
    parts = urllib.parse.urlsplit(proxy.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("POST", "/", b"{not json", {"Content-Type": "application/json"})
    assert json.loads(conn.getresponse().read())["error"]["code"] == -32700
    conn.close()
