from tests.helpers import ProxyTestCase, request


class Smoke(ProxyTestCase):
    async def test_basic(self):
        up = self.upstream()
        proxy = await self.proxy({"api": [up]})
        resp = await self.get(proxy, "/api/v1/users?q=1")
        self.assertEqual(resp.status, 200)
        d = resp.json()
        self.assertEqual(d["uri"], "/v1/users?q=1")
        print(d)
        r = await self.exchange(proxy, request("GET", "/api/x"))
        print(r)
        self.assertLoggedOnce(proxy, 2)
