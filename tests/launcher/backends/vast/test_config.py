"""Settings come from the environment (over defaults); the API key is only located, never read."""

from __future__ import annotations

from launcher.backends.vast.config import DEFAULT_IMAGE, VastCredentials, VastSettings


def test_defaults(monkeypatch):
    for var in ("LAUNCH_VAST_MAX_PRICE", "LAUNCH_VAST_BID_FACTOR", "LAUNCH_VAST_MAX_OUTBIDS", "LAUNCH_VAST_IMAGE", "VAST_URL"):
        monkeypatch.delenv(var, raising=False)
    s = VastSettings.from_env()
    assert (s.max_price, s.min_reliability, s.bid_factor, s.max_outbids, s.image, s.server_url) == \
        (None, 0.95, 1.25, 3, DEFAULT_IMAGE, None)


def test_environment_wins_over_the_default(monkeypatch):
    env = {"LAUNCH_VAST_MAX_PRICE": "2.5", "LAUNCH_VAST_MIN_RELIABILITY": "0.9", "LAUNCH_VAST_BID_FACTOR": "1.1",
           "LAUNCH_VAST_MAX_OUTBIDS": "0", "LAUNCH_VAST_IMAGE": "me/img:1", "LAUNCH_VAST_DISK_GB": "80",
           "LAUNCH_VAST_API_POLL": "2", "VAST_URL": "http://127.0.0.1:9/"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = VastSettings.from_env()
    assert (s.max_price, s.min_reliability, s.bid_factor, s.max_outbids, s.image, s.disk_gb, s.api_poll,
            s.server_url) == (2.5, 0.9, 1.1, 0, "me/img:1", 80, 2, "http://127.0.0.1:9")


def test_credentials_name_their_place_not_their_value(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    assert not VastCredentials.find().present
    (tmp_path / ".vast_api_key").write_text("k-123")
    assert VastCredentials.find().source == str(tmp_path / ".vast_api_key")
    monkeypatch.setenv("VAST_API_KEY", "k-456")
    found = VastCredentials.find()
    assert found.source == "VAST_API_KEY" and "k-456" not in repr(found) and "k-123" not in repr(found)


def test_pacing_settle_and_bandwidth_settings_come_from_the_environment(monkeypatch):
    d = VastSettings.from_env()
    assert (d.min_inet_down, d.settle, d.api_pace, d.rate_limit_wait) == (100, 30, 1, 300)
    for k, v in {"LAUNCH_VAST_MIN_INET_DOWN": "500", "LAUNCH_VAST_SETTLE": "5", "LAUNCH_VAST_API_PACE": "0.1",
                 "LAUNCH_VAST_RATE_LIMIT_WAIT": "60"}.items():
        monkeypatch.setenv(k, v)
    s = VastSettings.from_env()
    assert (s.min_inet_down, s.settle, s.api_pace, s.rate_limit_wait) == (500, 5, 0.1, 60)
