"""Where the service fetches residents' photos from (models/media.py keeps them).

- A WeChat media id: ``media/get`` through the WeChat client, while WeChat still has it (3 days).
  A refusal (40007: expired or unknown) is final; a busy WeChat or a timeout is tried again later.
- An https URL the mini-program gave: fetched through a session of its own that can reach public
  addresses only. A URL is chosen by whoever uses the mini-program, so without that check the
  service could be made to fetch, and hand back, a page from its own network (SSRF). The check
  is made in the resolver, on the addresses the connection will actually use, so a name whose DNS
  answer changes between a check and the connection cannot slip through. Redirects are not
  followed, cookies are not kept, the whole fetch has a time limit, and the body is read only up
  to the size limit. Whether it is an image is told from its bytes (models.media.check_image),
  never from the Content-Type the other side sent.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from bot.wxclient import WeChatAPIError, WeChatClient
from models.media import MAX_BYTES, MediaRefused

URL_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5, sock_read=10)
CHUNK = 64 * 1024


class NotPublic(OSError):
    """The name resolves to no public address."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses (loopback, private, link-local and the
    like are dropped; a name with none left fails with NotPublic)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise NotPublic(f"{host} has no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


def url_session(*, public_only: bool = True, ssl_context: ssl.SSLContext | bool = True) -> aiohttp.ClientSession:
    """The session photo URLs are fetched through (tests pass ``public_only=False`` and their own
    certificate authority to reach a server on loopback)."""
    connector = aiohttp.TCPConnector(resolver=PublicResolver() if public_only else None, ssl=ssl_context, limit=10)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=URL_TIMEOUT)


class MediaFetcher:
    """models.media.MediaSource for the running service."""

    def __init__(self, client: WeChatClient, urls: aiohttp.ClientSession, *, public_only: bool = True) -> None:
        self.client = client
        self.urls = urls
        self.public_only = public_only

    async def media_get(self, media_id: str) -> bytes:
        try:
            return await self.client.media_get(media_id)
        except WeChatAPIError as exc:
            if exc.transient:
                raise
            raise MediaRefused(f"WeChat refused the media id ({exc.errcode} {exc.errmsg}): expired or unknown"
                               ) from None

    async def fetch_url(self, url: str) -> bytes:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "https" or not host:
            raise MediaRefused("not an https URL")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and self.public_only and not is_public(host):
            raise MediaRefused(f"{host} is not a public address")  # the resolver never sees an address
        try:
            async with self.urls.get(url, allow_redirects=False, headers={"Accept": "image/*"}) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)  # try later
                if resp.status != 200:
                    raise MediaRefused(f"the URL answered HTTP {resp.status}"
                                       + (" (redirects are not followed)" if 300 <= resp.status < 400 else ""))
                if resp.content_length is not None and resp.content_length > MAX_BYTES:
                    raise MediaRefused(f"over {MAX_BYTES // (1024 * 1024)} MB")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    data += chunk
                    if len(data) > MAX_BYTES:
                        raise MediaRefused(f"over {MAX_BYTES // (1024 * 1024)} MB")
                return bytes(data)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, NotPublic):
                raise MediaRefused(str(exc.os_error)) from None
            raise
