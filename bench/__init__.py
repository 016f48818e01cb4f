"""Benchmarks: the WeChat gateway against bare aiohttp + wechatpy baselines (see bench/README.md)."""
