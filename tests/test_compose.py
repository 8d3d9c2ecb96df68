"""The Docker wiring a user relies on, checked without a Docker engine: compose file, nginx, Dockerfile."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PORT = 8000  # `python -m service` listens here by default
HOST_PORT = 8000  # the README's `curl localhost:8000/predict`


COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cluster.yml"]  # one Redis; a 6-node cluster


@pytest.fixture(scope="module", params=COMPOSE_FILES)
def services(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / request.param).read_text())
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


@pytest.fixture(scope="module")
def api_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in services.items() if build_context(s) == "."}


@pytest.fixture(scope="module")
def redis_names(services: dict[str, dict[str, Any]]) -> list[str]:
    """The Redis servers: one, or the nodes of a cluster (not the one-shot service forming it)."""
    names = [
        name
        for name, s in services.items()
        if str(s.get("image", "")).startswith("redis:") and "--cluster create" not in command_line(s)
    ]
    assert len(names) in (1, 6), f"expected one Redis or a 6-node cluster, found {names}"
    return names


@pytest.fixture(scope="module")
def cluster_init(services: dict[str, dict[str, Any]]) -> str | None:
    """The name of the one-shot service that forms the cluster, if this file runs one."""
    names = [name for name, s in services.items() if "--cluster create" in command_line(s)]
    assert len(names) <= 1
    return names[0] if names else None


@pytest.fixture(scope="module")
def lb(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return services["lb"]


@pytest.fixture(scope="module")
def nginx_conf(lb: dict[str, Any]) -> str:
    return (ROOT / mounted_conf(lb)).read_text()


def build_context(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    if isinstance(build, dict):
        return str(build.get("context", "."))
    return None if build is None else str(build)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command_line(service: dict[str, Any]) -> str:
    command = service.get("command", [])
    return " ".join(command) if isinstance(command, list) else str(command)


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def published(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port, from short ("8000:80") or long syntax."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["published"])] = int(entry["target"])
        else:
            *_, host, container = str(entry).split(":")
            ports[int(host)] = int(container.split("/")[0])
    return ports


def mounted_conf(lb: dict[str, Any]) -> str:
    for volume in lb.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if target.startswith("/etc/nginx/"):
            return source.removeprefix("./")
    raise AssertionError("no nginx config mounted into the lb")


def replica_count(api_services: dict[str, dict[str, Any]]) -> int:
    return sum(int(s.get("deploy", {}).get("replicas", 1)) for s in api_services.values())


# -- docker-compose.yml ---------------------------------------------------------------------------


def test_three_api_replicas_are_built_from_the_dockerfile(api_services: dict[str, dict[str, Any]]) -> None:
    assert replica_count(api_services) == 3


def test_every_replica_uses_the_compose_redis(
    api_services: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]], redis_names: list[str]
) -> None:
    for name in redis_names:
        command = command_line(services[name])
        assert "--port 6379" in command or "--port" not in command, "Redis must keep port 6379"
    scheme = "redis" if len(redis_names) == 1 else "redis+cluster"
    for name, service in api_services.items():
        url = urlsplit(environment(service)["REDIS_URL"])
        assert url.scheme == scheme, name
        hosts = [item.partition(":") for item in url.netloc.rpartition("@")[2].split(",")]
        assert {host for host, _, _ in hosts} <= set(redis_names), name
        assert {port or "6379" for _, _, port in hosts} == {"6379"}, name


def test_replicas_wait_for_a_healthy_redis(
    api_services: dict[str, dict[str, Any]],
    services: dict[str, dict[str, Any]],
    redis_names: list[str],
    cluster_init: str | None,
) -> None:
    for name in redis_names:
        redis_check = healthcheck_command(services[name])
        assert "redis-cli" in redis_check
        assert "ping" in redis_check
    if cluster_init is None:
        (redis_name,) = redis_names
        for name, service in api_services.items():
            assert service["depends_on"][redis_name]["condition"] == "service_healthy", name
        return
    # A cluster: formed once every node answers, and the replicas start once it is.
    for name in redis_names:
        assert services[cluster_init]["depends_on"][name]["condition"] == "service_healthy", name
    for name, service in api_services.items():
        assert service["depends_on"][cluster_init]["condition"] == "service_completed_successfully", name


def test_a_cluster_is_formed_from_every_node_with_a_replica_each(
    services: dict[str, dict[str, Any]], redis_names: list[str], cluster_init: str | None
) -> None:
    if cluster_init is None:
        pytest.skip("one Redis: no cluster to form")
    for name in redis_names:
        command = command_line(services[name])
        assert "--cluster-enabled yes" in command, name
        # Without it, one shard down would stop the whole cluster, not only that shard's keys.
        assert "--cluster-require-full-coverage no" in command, name
        # Not in a volume: a nodes.conf kept past `down` names its peers by IP addresses that new
        # containers do not have, and that cluster never forms again.
        assert "--cluster-config-file /tmp/" in command, name
        assert not services[name].get("volumes"), name
    init = command_line(services[cluster_init])
    assert "--cluster-replicas 1" in init
    assert "--cluster-yes" in init
    assert all(re.search(rf"\b{name}\b", init) for name in redis_names)
    assert services[cluster_init].get("restart") == "no"


def test_replicas_have_a_healthcheck_on_healthz(api_services: dict[str, dict[str, Any]]) -> None:
    for name, service in api_services.items():
        check = healthcheck_command(service)
        assert f"127.0.0.1:{SERVICE_PORT}/healthz" in check, name
        assert "curl" not in check, "python:slim has no curl"


def test_redis_is_not_published_on_the_host(
    services: dict[str, dict[str, Any]], redis_names: list[str]
) -> None:
    """A published 6379 would clash with a developer's own Redis and stop `docker compose up`."""
    for name in redis_names:
        assert published(services[name]) == {}, name


def test_lb_publishes_host_port_8000_to_nginx(lb: dict[str, Any], nginx_conf: str) -> None:
    assert str(lb["image"]).startswith("nginx:")
    container_port = published(lb)[HOST_PORT]
    assert re.search(rf"^\s*listen\s+{container_port}\s*;", nginx_conf, re.MULTILINE)


def test_lb_balances_over_every_replica(
    api_services: dict[str, dict[str, Any]], lb: dict[str, Any], nginx_conf: str
) -> None:
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", nginx_conf, re.DOTALL))
    passed_to = re.findall(r"proxy_pass\s+http://(\w+)\s*;", nginx_conf)
    assert passed_to, "no proxy_pass"
    assert all(name in upstreams for name in passed_to), "proxy_pass must name an upstream block"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstreams[passed_to[0]], re.MULTILINE)
    assert sorted(servers) == sorted((name, str(SERVICE_PORT)) for name in api_services)
    for name in api_services:
        assert lb["depends_on"][name]["condition"] == "service_healthy", name


# -- Dockerfile -----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def arguments_of(keyword: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile() if instruction == keyword]


def test_dockerfile_installs_from_the_lock_like_make_install() -> None:
    """Same `uv sync --frozen` as the Makefile, without dev tools; never a Python download."""
    syncs = [run for run in arguments_of("RUN") if "uv sync" in run]
    assert syncs, "no uv sync"
    assert all("--frozen" in run and "--no-dev" in run for run in syncs)
    assert any("--no-install-project" not in run for run in syncs), "the project itself must be installed"
    makefile = (ROOT / "Makefile").read_text()
    install_recipe = makefile.split("\ninstall:", 1)[1].split("\n\n", 1)[0]
    assert "sync --frozen" in install_recipe, "Makefile and Dockerfile must install the same way"
    assert any("UV_PYTHON_DOWNLOADS=never" in env for env in arguments_of("ENV"))
    assert arguments_of("FROM")[0].startswith("python:3.11-slim")


def test_dockerfile_copies_the_lock_before_installing_and_everything_the_build_needs() -> None:
    instructions = dockerfile()
    first_copy_of_lock = next(
        i for i, (kw, args) in enumerate(instructions) if kw == "COPY" and "uv.lock" in args
    )
    first_sync = next(i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "uv sync" in args)
    assert first_copy_of_lock < first_sync
    copied = {source for args in arguments_of("COPY") for source in shlex.split(args)[:-1]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "uv.lock", project["project"]["readme"]}
    needed |= set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert needed <= copied
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in ignored if line and not line.startswith(("#", "!"))]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not [p for p in patterns if fnmatch.fnmatch(source, p)], f".dockerignore drops {source}"


def test_dockerfile_runs_the_service_as_non_root_with_its_venv() -> None:
    users = arguments_of("USER")
    assert users, "no USER: the service would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(".venv/bin" in env and "PATH" in env for env in arguments_of("ENV"))
    assert json.loads(arguments_of("CMD")[-1]) == ["python", "-m", "service", "--host", "0.0.0.0"]
    assert str(SERVICE_PORT) in arguments_of("EXPOSE")[-1].split()


def test_dockerfile_healthcheck_hits_healthz() -> None:
    (healthcheck,) = arguments_of("HEALTHCHECK")
    assert f"http://127.0.0.1:{SERVICE_PORT}/healthz" in healthcheck
    assert "urllib" in healthcheck, "python:slim has no curl"
