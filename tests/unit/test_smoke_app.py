from tests.support.live import LiveServer


async def test_health_and_login_page(live: LiveServer) -> None:
    http = live.new_http()
    async with http.get(f"{live.url}/healthz") as r:
        assert r.status == 200
        assert (await r.json())["ok"] is True
