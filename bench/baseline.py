"""The two baselines the gateway benchmark compares ``linli serve`` with.

``echo``: a bare aiohttp + wechatpy endpoint in safe mode: check the URL signature and the
timestamp, check ``msg_signature`` and decrypt, ``parse_message``, answer a ``TextReply`` echoing
the text, encrypted. No state.

``stateful``: the echo plus the least state a correct bot needs per message: an atomic claim of
the push (SET NX with a TTL) that later stores the reply for WeChat's retries, a per-resident
lock (redis-py's lock), and one read and one write of the resident's state. The store is the real
Redis given by ``--redis-url`` or, without it, an in-process fakeredis (as linli's embedded store).

Run by bench/gateway.py as ``python -m bench.baseline --mode echo|stateful --port P``; the
credentials come from LINLI_WECHAT_TOKEN, LINLI_WECHAT_APPID and LINLI_WECHAT_ENCODING_AES_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

TIMESTAMP_WINDOW_S = 300
CLAIM_TTL_S = 600
STATE_TTL_S = 24 * 3600
RETRY_WAIT_S = 4.5
POOL_SIZE = 100  # redis-py's default size
POOL_WAIT_S = 20.0


class Handler:
    def __init__(self, token: str, appid: str, aes_key: str, store: Any) -> None:
        self.token = token
        self.crypto = WeChatCrypto(token, aes_key, appid)
        self.store = store  # a redis.asyncio.Redis (or fakeredis) for the stateful mode

    def _open(self, request: web.Request, body: bytes) -> tuple[Any, str, str] | web.Response:
        q = request.query
        signature, timestamp, nonce = q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        try:
            check_signature(self.token, signature, timestamp, nonce)
        except InvalidSignatureException:
            return web.Response(status=403, text="forbidden")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TIMESTAMP_WINDOW_S:
            return web.Response(status=403, text="forbidden")
        if q.get("encrypt_type") != "aes":
            return web.Response(status=400, text="safe mode only")
        try:
            xml = self.crypto.decrypt_message(body, q.get("msg_signature", ""), timestamp, nonce)
        except InvalidSignatureException:
            return web.Response(status=403, text="forbidden")
        except Exception:
            return web.Response(status=400, text="bad request")
        try:
            message = parse_message(xml)
        except Exception:
            return web.Response(status=400, text="bad request")
        return message, timestamp, nonce

    def _reply(self, message: Any, content: str, nonce: str) -> web.Response:
        reply = TextReply(message=message, content=content).render()
        return web.Response(text=self.crypto.encrypt_message(reply, nonce), content_type="application/xml")

    async def echo(self, request: web.Request) -> web.Response:
        opened = self._open(request, await request.read())
        if isinstance(opened, web.Response):
            return opened
        message, _, nonce = opened
        if getattr(message, "type", "") != "text":
            return web.Response(text="success")
        return self._reply(message, message.content, nonce)

    async def stateful(self, request: web.Request) -> web.Response:
        opened = self._open(request, await request.read())
        if isinstance(opened, web.Response):
            return opened
        message, _, nonce = opened
        if getattr(message, "type", "") != "text":
            return web.Response(text="success")
        store = self.store
        openid: str = message.source
        claim = f"bench:push:{openid}:{message.id}"
        if await store.set(claim, b"", nx=True, ex=CLAIM_TTL_S):
            content: str = message.content
            async with store.lock(f"bench:lock:{openid}", timeout=30, blocking_timeout=20):
                state_key = f"bench:conv:{openid}"
                raw = await store.get(state_key)
                state = json.loads(raw) if raw else {"n": 0}
                state["n"] += 1
                state["last"] = content
                await store.set(state_key, json.dumps(state, ensure_ascii=False), ex=STATE_TTL_S)
            await store.set(claim, content.encode(), ex=CLAIM_TTL_S)
            return self._reply(message, content, nonce)
        # A retry: wait (bounded) for the first delivery's reply.
        deadline = time.monotonic() + RETRY_WAIT_S
        while time.monotonic() < deadline:
            stored = await store.get(claim)
            if stored:
                return self._reply(message, stored.decode(), nonce)
            await asyncio.sleep(0.05)
        return web.Response(text="success")


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app(mode: str, redis_url: str) -> web.Application:
    token = os.environ["LINLI_WECHAT_TOKEN"]
    appid = os.environ["LINLI_WECHAT_APPID"]
    aes_key = os.environ["LINLI_WECHAT_ENCODING_AES_KEY"]
    app = web.Application()
    store: Any = None
    if mode == "stateful":
        # A blocking pool: redis-py's default pool raises MaxConnectionsError beyond 100 commands in
        # flight instead of waiting, which a correct bot must not do under a burst.
        from redis.asyncio import BlockingConnectionPool, Redis

        if redis_url:
            pool = BlockingConnectionPool.from_url(redis_url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S)
            store = Redis(connection_pool=pool)
        else:
            import fakeredis

            store = fakeredis.FakeAsyncRedis(connection_pool_class=BlockingConnectionPool,
                                             max_connections=POOL_SIZE)

        async def close_store(_app: web.Application) -> None:
            await store.aclose()

        app.on_cleanup.append(close_store)
    handler = Handler(token, appid, aes_key, store)
    app.router.add_post("/wechat", handler.echo if mode == "echo" else handler.stateful)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("echo", "stateful"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="", help="stateful mode: a redis:// URL; empty = in-process fakeredis")
    args = parser.parse_args()
    web.run_app(build_app(args.mode, args.redis_url), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
