"""CONTRACT 1: the config file, parsed and checked before any socket opens."""

import json
from pathlib import Path

import pytest

from twisted_gw.config.file import (
    SCHEMA,
    ConfigError,
    CorsConfig,
    Key,
    Section,
    load_config,
    parse_listen,
    reference,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def test_null_listen_means_default_and_unknown_keys_are_only_warned(tmp_path):
    config = load_config(
        write(tmp_path, "server:\n  proxy:\n    listen: null\n  whatever: 1\nfoo: bar\n")
    )
    assert config.proxy.port == 3000
    assert config.warnings == (
        "unknown config key 'server.whatever'",
        "unknown config key 'foo'",
    )


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


# -- CONTRACT 5.5: mistakes are reported -------------------------------------


def load_yaml(tmp_path, text):
    return load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "text, warning",
    [
        (
            "deployment:\n  admin:\n    admin_keys: [{key: a}]\n",
            "unknown config key 'deployment.admin.admin_keys' (did you mean 'admin_key'?)",
        ),
        ("deploymnet: {}\n", "unknown config key 'deploymnet' (did you mean 'deployment'?)"),
        ("foo: bar\n", "unknown config key 'foo'"),
        ("1: one\n", "unknown config key '1'"),
        (
            "server:\n  proxy:\n    listne: 127.0.0.1:1\n",
            "unknown config key 'server.proxy.listne' (did you mean 'listen'?)",
        ),
        (
            "server:\n  admin:\n    tls: {cert: c.pem}\n",
            "unknown config key 'server.admin.tls.cert' (did you mean 'cert_file'?)",
        ),
        (
            "server:\n  proxy:\n    access_log: {fromat: json}\n",
            "unknown config key 'server.proxy.access_log.fromat' (did you mean 'format'?)",
        ),
        (
            "deployment:\n  etcd:\n    tls: {insecure_skip_verify: true}\n",
            "unknown config key 'deployment.etcd.tls.insecure_skip_verify'",
        ),
        (
            "deployment:\n  redis:\n    on_eror: reject\n",
            "unknown config key 'deployment.redis.on_eror' (did you mean 'on_error'?)",
        ),
        (
            "deployment:\n  admin:\n    admin_key: [{key: a, name: ops}]\n",
            "unknown config key 'deployment.admin.admin_key[0].name'",
        ),
        ("plugin_hook: false\n", "unknown config key 'plugin_hook' (did you mean 'plugin_hooks'?)"),
    ],
)
def test_unknown_keys_are_one_warning_each_with_the_nearest_known_key(tmp_path, text, warning):
    assert load_yaml(tmp_path, text).warnings == (warning,)


def test_unknown_keys_do_not_stop_the_rest_from_loading(tmp_path):
    config = load_yaml(
        tmp_path,
        "telemetry: {otlp: {endpoint: x}}\n"  # a whole unknown section: one warning
        "server:\n  proxy:\n    listen: 127.0.0.1:4000\n    gzip: {enabled: true}\n",
    )
    assert config.proxy.port == 4000
    assert config.warnings == (
        "unknown config key 'telemetry'",
        "unknown config key 'server.proxy.gzip'",
    )


def test_known_files_load_without_warnings(tmp_path):
    assert load_config(str(EXAMPLES / "demo.yaml")).warnings == ()
    text = """
deployment:
  etcd: {host: ["http://127.0.0.1:2379"], prefix: /aisix, timeout: 5, user: u, password: p,
         startup_retries: 1, startup_retry_interval: 1, probe_interval: 0, tls: {verify: false}}
  admin: {admin_key: [{key: admin}]}
  store: {path: s.json, seed_demo: true}
  redis: {url: "redis://127.0.0.1:6379/0", prefix: gw, timeout: 1, on_error: reject}
server:
  proxy:
    listen: 127.0.0.1:3000
    tls: {enabled: false, cert_file: c.pem, key_file: k.pem}
    header_timeout: 5
    max_connections: 10
    max_body_bytes: 1024
    upstream_timeout: 30
    max_event_bytes: 2048
    max_response_bytes: 4096
    access_log: {format: json}
  admin: {listen: "127.0.0.1:3001", tls: {enabled: false}, header_timeout: 5, max_connections: 2}
hooks: [tests.support.finalize_counter.FinalizeCounter]
plugin_hooks: false
"""
    config = load_yaml(tmp_path, text)
    assert config.warnings == ()
    assert config.etcd.probe_interval == 0.0 and config.etcd.verify is False
    assert config.redis.fail_open is False and config.access_log_format == "json"
    assert (config.proxy.header_timeout, config.proxy.max_connections) == (5.0, 10)
    assert (config.max_event_bytes, config.max_response_bytes) == (2048, 4096)
    assert config.plugin_hooks is False and config.seed_demo is True


def test_plain_string_admin_key_is_refused_not_read_as_characters(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path, "deployment:\n  admin:\n    admin_key: my-admin\n")
    assert str(info.value) == (
        "deployment.admin.admin_key must be a list of {key: ...}, got a string"
    )


def test_admin_key_entries_are_mappings_or_strings(tmp_path):
    config = load_yaml(tmp_path, "deployment:\n  admin:\n    admin_key: [{key: my-admin}, other]\n")
    assert config.admin_keys == ("my-admin", "other")
    assert load_yaml(tmp_path, "deployment:\n  admin:\n    admin_key:\n").admin_keys == ()


@pytest.mark.parametrize(
    "text, message",
    [
        # a section of the wrong type
        ("server: []\n", "server must be a mapping, got a list"),
        ("deployment: admin\n", "deployment must be a mapping, got a string"),
        ("server:\n  proxy:\n    tls: true\n", "server.proxy.tls must be a mapping, got a boolean"),
        ("deployment:\n  etcd: x\n", "deployment.etcd must be a mapping, got a string"),
        # admin keys
        (
            "deployment:\n  admin:\n    admin_key: {key: a}\n",
            "deployment.admin.admin_key must be a list of {key: ...}, got a mapping",
        ),
        (
            "deployment:\n  admin:\n    admin_key: [5]\n",
            "deployment.admin.admin_key[0] must be {key: ...}, got an integer",
        ),
        (
            "deployment:\n  admin:\n    admin_key: [{key: a}, {key: ''}]\n",
            "deployment.admin.admin_key[1].key must be a non-empty string, got an empty string",
        ),
        (
            "deployment:\n  admin:\n    admin_key: [{name: a}]\n",
            "deployment.admin.admin_key[0].key must be a non-empty string, got nothing",
        ),
        (
            "deployment:\n  admin:\n    admin_key: [{key: 12345}]\n",
            "deployment.admin.admin_key[0].key must be a non-empty string, got an integer",
        ),
        (
            "deployment:\n  admin:\n    admin_key: ['']\n",
            "deployment.admin.admin_key[0] must be a non-empty string, got an empty string",
        ),
        # text
        (
            "deployment:\n  etcd:\n    prefix: 5\n",
            "deployment.etcd.prefix must be a string, got an integer",
        ),
        (
            "deployment:\n  etcd:\n    password: 123456\n",
            "deployment.etcd.password must be a string, got an integer",
        ),
        (
            "deployment:\n  store:\n    path: [a]\n",
            "deployment.store.path must be a string, got a list",
        ),
        (
            "server:\n  proxy:\n    tls: {enabled: true, cert_file: 5}\n",
            "server.proxy.tls.cert_file must be a string, got an integer",
        ),
        # flags
        (
            "deployment:\n  store:\n    seed_demo: 'yes'\n",
            "deployment.store.seed_demo must be true or false, got a string",
        ),
        (
            "server:\n  admin:\n    tls: {enabled: 1}\n",
            "server.admin.tls.enabled must be true or false, got an integer",
        ),
        ("plugin_hooks: 'false'\n", "plugin_hooks must be true or false, got a string"),
        (
            "deployment:\n  etcd:\n    tls: {verify: 0}\n",
            "deployment.etcd.tls.verify must be true or false, got an integer",
        ),
        # integers
        (
            "server:\n  proxy:\n    max_body_bytes: 0\n",
            "server.proxy.max_body_bytes must be a positive integer, got 0",
        ),
        (
            "server:\n  proxy:\n    max_body_bytes: '1024'\n",
            "server.proxy.max_body_bytes must be a positive integer, got a string",
        ),
        (
            "server:\n  proxy:\n    max_event_bytes: true\n",
            "server.proxy.max_event_bytes must be a positive integer, got a boolean",
        ),
        (
            "server:\n  proxy:\n    max_response_bytes: 1.5\n",
            "server.proxy.max_response_bytes must be a positive integer, got a number",
        ),
        (
            "server:\n  admin:\n    max_connections: -3\n",
            "server.admin.max_connections must be a positive integer, got -3",
        ),
        (
            "deployment:\n  etcd:\n    startup_retries: -1\n",
            "deployment.etcd.startup_retries must be a non-negative integer, got -1",
        ),
        # seconds
        (
            "server:\n  proxy:\n    upstream_timeout: 10s\n",
            "server.proxy.upstream_timeout must be a number of seconds >= 0, got a string",
        ),
        (
            "server:\n  proxy:\n    header_timeout: -1\n",
            "server.proxy.header_timeout must be a number of seconds >= 0, got -1",
        ),
        (
            "server:\n  admin:\n    header_timeout: .inf\n",
            "server.admin.header_timeout must be a number of seconds >= 0, got inf",
        ),
        (
            "deployment:\n  etcd:\n    timeout: false\n",
            "deployment.etcd.timeout must be a number of seconds >= 0, got a boolean",
        ),
        (
            "deployment:\n  redis:\n    timeout: [1]\n",
            "deployment.redis.timeout must be a number of seconds >= 0, got a list",
        ),
        # one of
        (
            "server:\n  proxy:\n    access_log: {format: xml}\n",
            "server.proxy.access_log.format must be 'logfmt' or 'json', got 'xml'",
        ),
        (
            "deployment:\n  redis:\n    on_error: 1\n",
            "deployment.redis.on_error must be 'allow' or 'reject', got an integer",
        ),
        # URLs: never echoed, they may hold a password
        (
            "deployment:\n  redis:\n    url: http://user:secret@h\n",
            "deployment.redis.url must start with redis:// or rediss://",
        ),
        (
            "deployment:\n  redis:\n    url: 6379\n",
            "deployment.redis.url must be a redis:// or rediss:// URL, got an integer",
        ),
        (
            "deployment:\n  etcd:\n    host: 2379\n",
            "deployment.etcd.host must be a URL or a list of URLs, got an integer",
        ),
        (
            "deployment:\n  etcd:\n    host: [http://a:2379, 5]\n",
            "deployment.etcd.host must be a URL or a list of URLs, got a list holding an integer",
        ),
        # hooks
        (
            "hooks: a.b.C\n",
            "hooks must be a list of dotted paths (package.module.Name), got a string",
        ),
        (
            "hooks: [a.b.C, '']\n",
            (
                "hooks must be a list of dotted paths (package.module.Name),"
                " got a list holding an empty string"
            ),
        ),
        # shutdown (CONTRACT 5.2) and CORS (5.6)
        (
            "server:\n  shutdown_grace: -1\n",
            "server.shutdown_grace must be a number of seconds >= 0, got -1",
        ),
        (
            "server:\n  shutdown_grace: soon\n",
            "server.shutdown_grace must be a number of seconds >= 0, got a string",
        ),
        ("server:\n  proxy:\n    cors: []\n", "server.proxy.cors must be a mapping, got a list"),
        (
            "server:\n  admin:\n    cors: {allow_origins: https://app.example}\n",
            (
                "server.admin.cors.allow_origins must be a list of origins (scheme://host[:port])"
                ' or "*", got a string'
            ),
        ),
        (
            "server:\n  proxy:\n    cors: {allow_origins: ['https://app.example/']}\n",
            (
                "server.proxy.cors.allow_origins must be a list of origins (scheme://host[:port])"
                ' or "*", got a list holding an entry that is not an origin'
                " (a path, a trailing '/' or no scheme)"
            ),
        ),
        (
            "server:\n  proxy:\n    cors: {allow_origins: [app.example]}\n",
            (
                "server.proxy.cors.allow_origins must be a list of origins (scheme://host[:port])"
                ' or "*", got a list holding an entry that is not an origin'
                " (a path, a trailing '/' or no scheme)"
            ),
        ),
        (
            "server:\n  proxy:\n    cors: {allow_origins: ['*'], allow_headers: ['x y']}\n",
            (
                'server.proxy.cors.allow_headers must be a list of header names or "*",'
                " got a list holding an entry that is not a header name"
            ),
        ),
        (
            "server:\n  proxy:\n    cors: {max_age: -1}\n",
            "server.proxy.cors.max_age must be a non-negative integer, got -1",
        ),
    ],
)
def test_wrong_type_or_range_is_an_error_naming_the_path_and_what_was_expected(
    tmp_path, text, message
):
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path, text)
    assert str(info.value) == message
    assert "secret" not in str(info.value) and "123456" not in str(info.value)


def test_null_sections_and_values_mean_the_defaults(tmp_path):
    text = """
deployment:
  admin:
  store:
  etcd:
  redis:
server:
  proxy:
    listen:
    tls:
    max_body_bytes:
    access_log:
  admin:
hooks:
plugin_hooks:
"""
    config = load_yaml(tmp_path, text)
    assert config.etcd is None and config.redis is None  # null: the feature stays off
    assert config.max_body_bytes == 32 * 1024 * 1024 and config.proxy.port == 3000
    assert config.plugin_hooks is True and config.hooks == ()
    assert config.warnings == ()
    empty = load_yaml(tmp_path, "deployment:\n  etcd: {}\n  redis: {}\n")
    assert empty.etcd.hosts == ("http://127.0.0.1:2379",) and empty.etcd.prefix == "/aisix"
    assert empty.redis.url == "redis://127.0.0.1:6379" and empty.redis.fail_open


def test_zero_seconds_mean_the_default_except_for_probing(tmp_path):
    config = load_yaml(
        tmp_path,
        "server:\n  proxy:\n    upstream_timeout: 0\n"
        "deployment:\n  etcd:\n    timeout: 0\n    probe_interval: 0\n",
    )
    assert config.upstream_timeout == 600.0 and config.etcd.timeout == 5.0
    assert config.etcd.probe_interval == 0.0


def _leaves(section, path=""):
    for name, spec in section.keys.items():
        where = f"{path}.{name}" if path else name
        if isinstance(spec, Section):
            yield from _leaves(spec, where)
        else:
            assert isinstance(spec, Key)
            yield where


def test_shutdown_grace_and_cors_are_read_with_their_defaults(tmp_path):
    config = load_yaml(tmp_path, "server: {}\n")
    assert config.shutdown_grace == 30.0  # CONTRACT 5.2's default
    assert config.proxy.cors is None and config.admin.cors is None  # CORS is off by default
    config = load_yaml(
        tmp_path,
        "server:\n  shutdown_grace: 0\n  proxy:\n"
        "    cors: {allow_origins: ['https://App.example', '*'], allow_headers: [X-Api-Key]}\n"
        "  admin:\n    cors: {}\n",
    )
    assert config.shutdown_grace == 0.0  # 0 cuts at once, it is not "the default"
    assert config.proxy.cors == CorsConfig(("https://app.example", "*"), ("x-api-key",), 600)
    assert config.admin.cors == CorsConfig((), ("authorization", "content-type"), 600)
    assert config.warnings == ()


def test_the_reference_lists_every_key_with_what_it_accepts_and_means():
    rows = list(reference())
    keys = [key for key, *_ in rows]
    assert set(_leaves(SCHEMA)) <= set(keys)
    assert {"deployment.etcd", "deployment.redis"} <= set(keys)  # sections that switch features on
    assert all(accepts and default and meaning for _, accepts, default, meaning in rows)
    assert ("deployment.admin.admin_key", "a list of {key: ...}", "[]") == rows[
        keys.index("deployment.admin.admin_key")
    ][:3]


def test_readme_config_reference_lists_every_key():
    """The README's table is generated from the schema; keep it so."""
    from pathlib import Path

    from twisted_gw.config.file import reference

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for key, accepts, default, meaning in reference():
        assert f"| `{key}` | {accepts} | {default} | {meaning} |" in readme, key
