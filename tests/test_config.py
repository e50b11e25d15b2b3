"""The static configuration contract: defaults, and errors that name the key and the fix."""

import base64

import pytest

from gwfast.config import ConfigError, load_config_file, parse_config

EP = {"endpoints": ["http://127.0.0.1:9001/mcp"]}


def test_defaults_are_documented_values():
    cfg, backends = parse_config({"backends": {"everything": EP}})
    assert cfg.listen == "127.0.0.1:8080" and cfg.workers == 1
    b = backends["everything"]
    assert (b.affinity, b.placement, b.load_factor) == ("session", "random", 1.25)
    assert (b.health_check.path, b.health_check.interval) == ("/healthz", 5.0)
    assert cfg.limits.max_header_bytes == 16384 and cfg.timeouts.connect == 3.0


@pytest.mark.parametrize(
    "value,seconds",
    [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), (3, 3.0), (1.5, 1.5), ("1h", 3600.0)],
)
def test_durations(value, seconds):
    cfg, _ = parse_config({"timeouts": {"idle": value}})
    assert cfg.timeouts.idle == seconds


@pytest.mark.parametrize(
    "data,path,words",
    [
        ({"listne": "x"}, "$", "unknown field `listne`"),
        ({"backends": {"x": {**EP, "afinity": "none"}}}, "$.backends.x", "afinity"),
        ({"backends": {"x": {**EP, "affinity": "sticky"}}}, "$.backends.x.affinity", "session"),
        ({"backends": {"x": {**EP, "placement": "rr"}}}, "$.backends.x.placement", "header:NAME"),
        (
            {"backends": {"x": {**EP, "health_check": {"interval": "soon"}}}},
            "$.backends.x.health_check.interval",
            "invalid duration",
        ),
        (
            {"backends": {"x": {"endpoints": ["https://a/mcp"]}}},
            "$.backends.x.endpoints[0]",
            "http://",
        ),
        ({"backends": {"x": {"endpoints": []}}}, "$.backends.x.endpoints", "at least one"),
        ({"backends": {"Bad_Name": EP}}, "$.backends.Bad_Name", "DNS-1123"),
        ({"backends": {"a" * 53: EP}}, "$.backends." + "a" * 53, "52"),
        ({"listen": "8080"}, "$.listen", "host:port"),
        ({"workers": 0}, "$.workers", "between 1"),
        ({"timeouts": {"connect": 0}}, "$.timeouts.connect", "above zero"),
        ({"session_keys": ["c2hvcnQ="]}, "$.session_keys[0]", "32"),
    ],
)
def test_bad_values_name_the_key(tmp_path, data, path, words):
    import yaml

    f = tmp_path / "gw.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_config_file(f)
    assert f"`{path}" in str(e.value) and words in str(e.value)


def test_session_key_file(tmp_path):
    k1, k2 = b"a" * 32, b"b" * 32
    (tmp_path / "keys").write_text(
        base64.b64encode(k1).decode() + "\n\n" + base64.b64encode(k2).decode() + "\n"
    )
    (tmp_path / "gw.yaml").write_text("session_key_file: keys\n")
    assert load_config_file(tmp_path / "gw.yaml")[2] == [k1, k2]


def test_cli_reports_config_errors(tmp_path):
    import subprocess
    import sys

    (tmp_path / "gw.yaml").write_text("backends: {x: {endpoints: [ftp://a]}}\n")
    r = subprocess.run(
        [sys.executable, "-m", "gwfast", "proxy", "--config", str(tmp_path / "gw.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "$.backends.x.endpoints[0]" in r.stderr and "Traceback" not in r.stderr
