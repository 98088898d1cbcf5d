"""The API's /docs page works without internet: it names no other server, and the files
it loads are served by the API itself."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from vitrine.api import docs_page


async def _fetch_page_and_assets(app: FastAPI) -> tuple[httpx.Response, dict[str, int]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        page = await client.get("/docs")
        found = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        assets = [u for pair in found for u in pair if u]
        served = {}
        for asset in assets:
            if asset.startswith(docs_page.STATIC):
                answer = await client.get(asset)
                served[asset] = answer.status_code if answer.content else 0
            else:
                served[asset] = -1  # not this server's static files
        return page, served


def test_the_docs_page_loads_everything_from_this_server() -> None:
    app = FastAPI(title="vitrine", docs_url=None)
    docs_page.install(app)
    page, served = asyncio.run(_fetch_page_and_assets(app))
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert f"{docs_page.STATIC}/swagger-ui-bundle.js" in served
    assert not [u for u in served if re.match(r"^(https?:)?//", u)], served  # no CDN
    assert {u: s for u, s in served.items() if u.startswith(docs_page.STATIC) and s != 200} == {}
