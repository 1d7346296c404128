"""Pages forbid framing and run only the instance's own script."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import Env
from tests.instance.test_api import setup

TEMPLATES = Path(__file__).parents[2] / "instance" / "templates"


async def test_pages_send_csp_and_frame_options(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "A"}})).get_json()
    for path in ("/login", "/", "/trackers/bugs", f"/items/{item['id']}", "/items/999999"):
        r = await alice.get(path, headers={"Accept": "text/html"})
        assert r.mimetype == "text/html", path
        csp = r.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert r.headers.get("X-Frame-Options") == "DENY", path


def test_templates_hold_no_inline_script() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            # A script from a file, or a data block (never executed).
            assert "src=" in tag or 'type="application/json"' in tag, (template.name, tag)
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text and "style=" not in text, template.name
