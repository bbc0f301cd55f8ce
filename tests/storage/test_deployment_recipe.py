"""The several-hosts recipe of docs/deployment.md, run as documented: its TOML block on two ``toolrelay serve`` processes.

The configuration is read from the document itself, so the recipe cannot
drift from what is tested: only what cannot be the same here is replaced
(the database's, Redis's and the upstream's addresses, each host's
``data_dir`` and port). Then the documented commands: ``toolrelay db
upgrade``, ``toolrelay serve`` twice, ``toolrelay keys create`` and
``toolrelay usage --group-by host,key`` with the same file. A key made on
either side works on the other, a memory saved through A is found through B,
both hosts answer the load balancer's ``/ready`` with the database up, a
key's rate limit is counted once across both (Redis), and the usage shows
both hosts' requests. The load balancer itself is not run.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from operations.serve_process import ServeProcess

from fakes.server import write_toml
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-documented-upstream"


def documented_config() -> dict[str, Any]:
    """The TOML block of docs/deployment.md's "Several hosts" section."""
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    section = text.split("\n## Several hosts\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found, "docs/deployment.md's several-hosts section has no TOML block"
    return tomllib.loads(found.group(1))


def _for_this_machine(documented: dict[str, Any], *, data_dir: Path, postgres_url: str, redis_url: str, upstream_url: str) -> dict[str, Any]:
    tree = copy.deepcopy(documented)
    tree["server"]["data_dir"] = str(data_dir)
    tree["database"]["url"] = postgres_url
    tree["redis"]["url"] = redis_url
    [upstream] = tree["upstreams"].values()
    upstream["base_url"] = upstream_url
    return tree


def _cli(config: Path, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLRELAY_")} | {"OPENAI_API_KEY": UPSTREAM_KEY}
    done = subprocess.run([sys.executable, "-m", "toolrelay.app", *argv, "--config", str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_documented_config_holds_what_the_section_says_it_does() -> None:
    documented = documented_config()
    # Public address (authentication on), an admin key, one database and one Redis shared by every host.
    assert documented["server"]["host"] == "0.0.0.0"
    assert len(documented["auth"]["admin_key"]) >= 16
    assert documented["database"]["url"].startswith("postgresql://")
    assert documented["redis"]["url"].startswith("redis://")
    assert set(documented) == {"server", "upstreams", "auth", "database", "redis"}


def test_two_hosts_run_the_documented_recipe(tmp_path: Path, fake: FakeUpstream, postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    documented = documented_config()
    [upstream] = documented["upstreams"].values()
    model = upstream["models"][0]
    fake.models = list(upstream["models"])
    # The upstream key comes from the variable the recipe names, as the hosts inherit it.
    monkeypatch.setenv(upstream["api_key_env"], UPSTREAM_KEY)
    admin = {"authorization": f"Bearer {documented['auth']['admin_key']}"}

    configs: dict[str, Path] = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tree = _for_this_machine(documented, data_dir=tmp_path / name / "data", postgres_url=postgres_url, redis_url=redis_url, upstream_url=fake.base_url)
        configs[name] = write_toml(tmp_path / name / "toolrelay.toml", tree)
    _cli(configs["a"], "db", "upgrade")
    with (
        ServeProcess(tmp_path / "a", "", tree=tomllib.loads(configs["a"].read_text())) as a,
        ServeProcess(tmp_path / "b", "", tree=tomllib.loads(configs["b"].read_text())) as b,
    ):
        a.wait_ready()
        b.wait_ready()
        for host in (a, b):
            # What the load balancer checks: ready, the database among the checks.
            ready = httpx.get(host.root_url + "/ready", headers=admin, timeout=10)
            assert ready.status_code == 200, ready.text
            assert "database" in ready.text

        # A key made through A's admin API works on B at once; one made by the CLI "from anywhere" works on both.
        made = httpx.post(a.root_url + "/admin/keys", headers=admin, json={"name": "team"}, timeout=10)
        assert made.status_code == 200, made.text
        team_id, team = made.json()["id"], made.json()["value"]
        cli_key = json.loads(_cli(configs["b"], "keys", "create", "--name", "ci", "--rpm", "3", "--json"))
        fake.default_reply = Reply(content="Hello from upstream.")
        for host, key in ((b, team), (a, team), (a, cli_key["value"]), (b, cli_key["value"])):
            with openai.OpenAI(base_url=host.base_url, api_key=key, max_retries=0) as client:
                answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "Hello from upstream."
        assert fake.chat_requests[-1].headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
        # The CI key's 3 requests a minute are counted once, in Redis: its third goes through B, the fourth is refused on A.
        with openai.OpenAI(base_url=b.base_url, api_key=cli_key["value"], max_retries=0) as client:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        with openai.OpenAI(base_url=a.base_url, api_key=cli_key["value"], max_retries=0) as client, pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])

        # A memory saved through A is found through B.
        saved = httpx.post(
            a.root_url + "/v1/memories", headers={"authorization": f"Bearer {team}"}, json={"text": "The release train leaves on Thursdays"}, timeout=10
        )
        assert saved.status_code == 200, saved.text
        found = httpx.get(b.root_url + "/v1/memories/search", headers={"authorization": f"Bearer {team}"}, params={"q": "release thursday"}, timeout=10)
        assert [m["id"] for m in found.json()["data"]] == [saved.json()["id"]]

        # toolrelay usage, as documented: both hosts' requests (each host's default name is <hostname>:<pid>).
        def by_host() -> dict[str, int]:
            data = json.loads(_cli(configs["a"], "usage", "--group-by", "host,key", "--json"))["data"]
            return {item["host"]: item["requests"] for item in data if item["key"] == team_id}

        # A: a chat and the save; B: a chat and the search.
        hosts = {f"{socket.gethostname()}:{host.process.pid}": 2 for host in (a, b)}
        wait_until(lambda: by_host() == hosts, timeout=10, what="both hosts' requests in toolrelay usage")
