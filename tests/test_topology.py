"""REDIS_URL in its three forms: parsed into a mode and nodes, refused with the setting named, and
never echoing a password."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.settings.config import Settings, build_parser
from service.settings.converters import redact_url
from service.settings.redis_url import parse_redis_url


def test_a_cluster_url_names_any_nodes_and_a_password() -> None:
    address = parse_redis_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001")
    assert address.mode == "cluster"
    assert address.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert address.password == "s3cret"
    assert not address.tls
    assert "s3cret" not in repr(address)


def test_a_sentinel_url_names_the_sentinels_the_primary_and_a_database() -> None:
    address = parse_redis_url("rediss+sentinel://app:pw@s1,s2:26380/mymaster/3?ssl_ca_certs=/ca.pem")
    assert address.mode == "sentinel"
    assert address.tls
    assert address.nodes == (("s1", 26379), ("s2", 26380))
    assert (address.master_name, address.db) == ("mymaster", 3)
    assert (address.username, address.password) == ("app", "pw")
    assert address.tls_options == (("ssl_ca_certs", "/ca.pem"),)


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://h/1", "unix:///tmp/redis.sock"])
def test_single_redis_urls_are_as_before(url: str) -> None:
    assert parse_redis_url(url).mode == "single"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://h:1", "must start with"),
        ("redis+sentinel://:hunter2@h:26379", "MASTER_NAME"),
        ("redis+cluster://:hunter2@h:7000/2", "only database 0"),
        ("redis+cluster://:hunter2@h:99999", "bad port"),
        ("redis+cluster://:hunter2@h:7000,", "host is missing"),
        ("redis+cluster://:hunter2@h:7000?timeout=1", "unknown parameter"),
    ],
)
def test_a_malformed_url_names_the_setting_and_hides_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_args([], {"REDIS_URL": url})
    message = str(caught.value)
    assert "REDIS_URL" in message
    assert complaint in message
    assert "hunter2" not in message


def test_redact_url_hides_the_password_of_a_node_list() -> None:
    assert redact_url("redis+cluster://u:pw@h1:1,h2:2") == "redis+cluster://u:***@h1:1,h2:2"
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis+sentinel://h:1/m") == "redis+sentinel://h:1/m"


def test_help_names_the_cluster_and_sentinel_forms() -> None:
    text = "".join(build_parser().format_help().split())  # argparse wraps long words anywhere
    assert "redis+cluster://HOST:PORT[,HOST:PORT...]" in text
    assert "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]" in text
