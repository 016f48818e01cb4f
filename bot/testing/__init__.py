"""Test doubles that speak real protocols: the fake WeChat API server (a real HTTP server on loopback)."""

from bot.testing.fake_wechat import Call, FakeWeChat, QrCode, SentMessage

__all__ = ["Call", "FakeWeChat", "QrCode", "SentMessage"]
