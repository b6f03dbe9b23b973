"""``manta data serve``'s app: files in the folder are served, nothing else is."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from client.serve import create_app


async def test_serves_plain_files_only(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_bytes(b'{"a":1}')
    (tmp_path / ".hidden").write_text("secret")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("inner")
    async with TestClient(TestServer(create_app(tmp_path))) as client:
        response = await client.get("/spec.json")
        assert response.status == 200 and await response.read() == b'{"a":1}'
        ranged = await client.get("/spec.json", headers={"Range": "bytes=1-3"})
        assert ranged.status == 206 and await ranged.read() == b'"a"'
        assert (await client.get("/")).status == 200
        assert await (await client.get("/")).json() == {"files": ["spec.json"]}
        for path in ("/.hidden", "/sub", "/sub/inner.txt", "/..%2Fetc%2Fpasswd", "/nope"):
            assert (await client.get(path)).status == 404, path
