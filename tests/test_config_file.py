"""CONTRACT 1: the config file, parsed and checked before any socket opens."""

import json

import pytest

from twisted_gw.config.file import ConfigError, load_config, parse_listen


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_when_no_file_and_no_config_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert (config.proxy.host, config.proxy.port) == ("0.0.0.0", 3000)
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 3001)
    assert config.admin_keys == ()
    assert config.etcd is None
    assert config.max_body_bytes == 32 * 1024 * 1024
    assert config.upstream_timeout == 600.0


def test_config_yaml_in_working_directory_is_used_without_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "server:\n  proxy:\n    listen: 127.0.0.1:4000\n")
    assert load_config(None).proxy.port == 4000


def test_json_by_extension(tmp_path):
    doc = {
        "server": {"admin": {"listen": "[::1]:4001"}},
        "deployment": {"admin": {"admin_key": [{"key": "a"}]}},
    }
    config = load_config(write(tmp_path, json.dumps(doc), "c.json"))
    assert (config.admin.host, config.admin.port) == ("::1", 4001)
    assert config.admin_keys == ("a",)


def test_null_listen_means_default_and_unknown_keys_are_ignored(tmp_path):
    config = load_config(
        write(tmp_path, "server:\n  proxy:\n    listen: null\n  whatever: 1\nfoo: bar\n")
    )
    assert config.proxy.port == 3000


def test_aisix_tooling_values_load(tmp_path):
    text = """
deployment:
  etcd:
    host: ["http://127.0.0.1:2379"]
    prefix: /aisix
    timeout: 5000
  admin:
    admin_key:
      - key: admin
"""
    config = load_config(write(tmp_path, text))
    assert config.etcd.timeout == 5.0
    assert config.etcd.prefix == "/aisix"
    assert config.etcd.hosts == ("http://127.0.0.1:2379",)


def test_etcd_timeout_in_seconds_stays_seconds(tmp_path):
    config = load_config(write(tmp_path, "deployment:\n  etcd:\n    timeout: 5\n"))
    assert config.etcd.timeout == 5.0


@pytest.mark.parametrize(
    "value",
    [
        "invalid-listen-addr",
        "localhost:3000",
        "127.0.0.1",
        "127.0.0.1:99999",
        "::1:3000",
        "[127.0.0.1]:3000",
        "1.2.3.4:x",
    ],
)
def test_bad_listen_addresses_are_refused(value):
    with pytest.raises(ConfigError, match="invalid socket address syntax"):
        parse_listen("Proxy", value, "0.0.0.0:3000")


def test_tls_messages_in_contract_order(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    cases = [
        ("{enabled: true}", "Proxy TLS cert_file is required when TLS is enabled"),
        (
            f"{{enabled: true, cert_file: {cert}}}",
            "Proxy TLS key_file is required when TLS is enabled",
        ),
        (
            "{enabled: true, cert_file: /nope.pem, key_file: /nope.key}",
            "Proxy TLS cert_file '/nope.pem' does not exist",
        ),
        (
            f"{{enabled: true, cert_file: {cert}, key_file: /nope.key}}",
            "Proxy TLS key_file '/nope.key' does not exist",
        ),
    ]
    for tls, message in cases:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, f"server:\n  proxy:\n    tls: {tls}\n"))
        assert str(info.value) == message
    with pytest.raises(ConfigError, match="^Admin TLS cert_file is required when TLS is enabled$"):
        load_config(write(tmp_path, "server:\n  admin:\n    tls: {enabled: true}\n"))


def test_disabled_tls_ignores_missing_files(tmp_path):
    config = load_config(
        write(tmp_path, "server:\n  proxy:\n    tls: {enabled: false, cert_file: /nope}\n")
    )
    assert not config.proxy.tls.enabled


def test_unparsable_file_names_the_file(tmp_path):
    path = write(tmp_path, "server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert path in str(info.value)
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(write(tmp_path, "{", "c.json"))


def test_store_path_defaults_next_to_config(tmp_path):
    config = load_config(write(tmp_path, "{}\n"))
    assert config.store_path == str(tmp_path / "twisted-gw-store.json")
