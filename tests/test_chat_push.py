"""`linli chat` shows what is pushed to its resident: here, the grid worker's decision."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.test_cli import LINLI, linli

ELDER = ["绑定", "是", "王秀兰", "13904180011", "1", "1", "2", "301", "是"]


async def _read_until(stream: asyncio.StreamReader, needle: str, limit_s: float = 30) -> str:
    seen = ""
    async def read() -> str:
        nonlocal seen
        while needle not in seen:
            chunk = await stream.read(4096)
            if not chunk:
                break
            seen += chunk.decode()
        return seen
    return await asyncio.wait_for(read(), timeout=limit_s)  # a hang guard, not a timing assertion


async def test_chat_prints_the_notice_pushed_by_another_session(tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert linli("demo", cwd=tmp_path, env=cli_env).returncode == 0
    resident = await asyncio.create_subprocess_exec(
        *LINLI, "chat", "--as", "o-elder", cwd=tmp_path, env=cli_env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert resident.stdin is not None and resident.stdout is not None
    try:
        resident.stdin.write(("\n".join(ELDER) + "\n").encode())
        await resident.stdin.drain()
        assert "网格员核实" in await _read_until(resident.stdout, "网格员核实")

        # Meanwhile the grid worker answers in a session of their own.
        worker = await asyncio.to_thread(linli, "chat", "--as", "demo-grid-1", cwd=tmp_path, env=cli_env,
                                         stdin="你好\n是\n")
        assert "已确认绑定" in worker.stdout

        pushed = await _read_until(resident.stdout, "已由网格员确认")
        assert "【客服消息→o-elder】您的绑定申请已由网格员确认" in pushed
        resident.stdin.write("菜单\n".encode())
        await resident.stdin.drain()
        assert "我的信息" in await _read_until(resident.stdout, "我的信息")
    finally:
        resident.stdin.close()
        await asyncio.wait_for(resident.wait(), timeout=30)
