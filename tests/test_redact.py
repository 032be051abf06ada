"""Credentials out of URLs, and the warning when the key would travel in clear text."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.cli.common import api_target
from batchgen.job.spec import Overrides, load_job
from batchgen.redact import cleartext_warning, is_loopback, redact_url, url_host
from tests.helpers.paths import ROOT


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com"),
        ("https://user:secret@proxy.example/gemini", "https://***@proxy.example/gemini"),
        ("http://token@10.0.0.5:8080", "http://***@10.0.0.5:8080"),
        ("https://a:b@c@proxy.example/x", "https://***@proxy.example/x"),  # '@' in the password
        (
            "https://proxy.example/v1?key=AIza123&alt=sse",
            "https://proxy.example/v1?key=***&alt=sse",
        ),
        (
            "https://proxy.example/v1?alt=sse&KEY=AIza123",
            "https://proxy.example/v1?alt=sse&KEY=***",
        ),
        ("https://u:p@[::1/broken?key=k", "https://***@[::1/broken?key=***"),  # unparseable
        ("https://proxy.example/path@not-userinfo", "https://proxy.example/path@not-userinfo"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_host_names_the_host_and_port_only() -> None:
    assert url_host("http://user:pw@127.0.0.2:8089/v1beta/x?key=1") == "127.0.0.2:8089"
    assert url_host("https://proxy.example/") == "proxy.example"
    assert url_host("http://[::1]:9/") == "[::1]:9"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("api.localhost", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.1", False), ("proxy.example", False), ("localhost.example", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_cleartext_warning_only_for_http_to_another_machine() -> None:
    warning = cleartext_warning("http://user:pw@proxy.example:8080")
    assert warning is not None and "clear text" in warning
    assert "http://***@proxy.example:8080" in warning and "pw" not in warning
    for url in (
        "https://proxy.example",
        "http://127.0.0.1:8089",
        "http://localhost",
        "http://[::1]:1",
    ):
        assert cleartext_warning(url) is None


@pytest.mark.parametrize(("base_url", "warned"), [("http://10.1.2.3:8080", True),
                                                  ("http://127.0.0.1:8080", False)])  # fmt: skip
def test_api_target_warns_once_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], base_url: str, warned: bool
) -> None:
    job = load_job(ROOT / "jobs" / "cookie_recipes.toml", Overrides(base_url=base_url))
    monkeypatch.setenv("GEMINI_API_KEY", "a-key-for-the-test")
    with api_target(job, emulator=False, alternative="use --emulator") as (_, key):
        assert key == "a-key-for-the-test"
    err = capsys.readouterr().err
    if warned:
        assert err.count("\n") == 1 and err.startswith("warning: model.base_url http://10.1.2.3")
    else:
        assert err == ""
    assert "a-key-for-the-test" not in err


def test_validate_shows_the_base_url_without_its_credentials(project: Path) -> None:
    job = project / "jobs" / "cookie_recipes.toml"
    url = "https://user:hunter2@proxy.example/gemini"
    result = CliRunner().invoke(main, ["validate", str(job), "--base-url", url, "--show-request"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "at https://***@proxy.example/gemini (key from $GEMINI_API_KEY)" in result.output
    assert "POST https://***@proxy.example/gemini/v1beta/models/" in result.output
