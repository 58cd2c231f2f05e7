"""Tools for testing ledger against chains that behave like real ones.

:mod:`ledger.testing.provider` is a JSON-RPC proxy that stands in front of a
real node (Anvil) and behaves like a commercial RPC provider: ``eth_getLogs``
limits, rate limiting, dropped connections, slow answers. The tests and the
``bench/`` scripts both use it; ledger itself never imports this package.
"""
