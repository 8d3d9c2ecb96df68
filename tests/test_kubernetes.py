"""deploy/kubernetes: built with kubectl's own kustomize and validated offline against the Kubernetes
schemas, then checked for what draining, security and the settings rely on."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings.config import Settings
from service.settings.options import OPTIONS
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
BUILDS = ("base", "overlays/try")
# The oldest Kubernetes the manifests promise to work on (HPA autoscaling/v2, PDB policy/v1 and
# everything else they use are GA there), and the newest the installed schemas know.
SCHEMA_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

Manifest = dict[str, Any]


def kustomize_build(path: str) -> list[Manifest]:
    kubectl = require_tool("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=BUILDS)
def built(request: pytest.FixtureRequest) -> list[Manifest]:
    """The kustomize output of the base and of each overlay."""
    return kustomize_build(request.param)


@pytest.fixture(scope="module")
def try_overlay() -> list[Manifest]:
    return kustomize_build("overlays/try")


def one(manifests: list[Manifest], kind: str, name_prefix: str = "predcache") -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"expected one {kind} named {name_prefix}*, found {len(found)}"
    return found[0]


def api_container(manifests: list[Manifest]) -> Manifest:
    containers: list[Manifest] = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "predcache")


def configmap_env(manifests: list[Manifest]) -> dict[str, str]:
    container = api_container(manifests)
    names = [ref["configMapRef"]["name"] for ref in container.get("envFrom", []) if "configMapRef" in ref]
    env: dict[str, str] = {}
    for name in names:
        env.update(one(manifests, "ConfigMap", name)["data"])
    return env


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_built_manifest_validates_against_the_kubernetes_schemas(
    built: list[Manifest], version: str
) -> None:
    """Strict: an unknown or misspelt field is an error, not silently dropped by the API server."""
    assert built
    for manifest in built:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_schema_validation_catches_a_misspelt_field(built: list[Manifest]) -> None:
    """The check above can fail: a Deployment with a typo does not validate."""
    deployment = one(built, "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


def test_three_replicas_run_non_root_on_a_read_only_root_filesystem(built: list[Manifest]) -> None:
    deployment = one(built, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = api_container(built)
    assert deployment["spec"]["replicas"] == 3
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    # The numeric user must be the image's own, created by the Dockerfile.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']} " in dockerfile
    assert f"--gid {pod['securityContext']['runAsGroup']} " in dockerfile


def test_probes_use_healthz_for_liveness_and_readyz_for_readiness(built: list[Manifest]) -> None:
    container = api_container(built)
    port = container["ports"][0]
    assert port["containerPort"] == Settings().port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])


def test_the_grace_period_covers_the_prestop_pause_and_a_whole_model_call(built: list[Manifest]) -> None:
    """Draining behind a Service: the pod leaves the endpoints during preStop, then SIGTERM lets a model
    call in flight run to its timeout; only past the grace period does the kubelet kill it."""
    pod = one(built, "Deployment")["spec"]["template"]["spec"]
    command = api_container(built)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pause_s = float(command[1])
    assert pause_s >= 2, "too short for the endpoints change to reach every proxy"
    model_timeout_s = Settings.from_env(configmap_env(built)).model_timeout_s
    assert pod["terminationGracePeriodSeconds"] > pause_s + model_timeout_s


def test_settings_come_from_a_configmap_the_service_accepts(built: list[Manifest]) -> None:
    """Every key is a setting the service reads (a typo would be silently ignored), and its values parse."""
    env = configmap_env(built)
    known = {option.env for option in OPTIONS}
    assert env
    assert set(env) <= known, f"not settings of the service: {sorted(set(env) - known)}"
    assert not {"REDIS_URL", "ADMIN_TOKEN"} & set(env), "secrets belong in the Secret, not the ConfigMap"
    container = api_container(built)
    settings = Settings.from_args(container.get("args", []), env)
    assert settings.port == container["ports"][0]["containerPort"]


def test_redis_url_and_admin_token_come_from_a_secret(built: list[Manifest]) -> None:
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in api_container(built)["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert set(refs) == {"REDIS_URL", "ADMIN_TOKEN"}
    assert refs["REDIS_URL"]["key"] == "REDIS_URL"
    assert not refs["REDIS_URL"].get("optional"), "without Redis the fleet shares no model calls"
    assert refs["ADMIN_TOKEN"]["optional"] is True, "unset ADMIN_TOKEN keeps DELETE /cache off"
    assert len({ref["name"] for ref in refs.values()}) == 1


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def test_service_hpa_and_pdb_point_at_the_deployment(built: list[Manifest]) -> None:
    deployment = one(built, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = one(built, "Service")
    assert matches(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"][0]["targetPort"] in ("http", Settings().port)
    pdb = one(built, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    hpa = one(built, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_the_base_leaves_the_secret_to_the_user() -> None:
    """The base must not ship a REDIS_URL: pointing at someone's Redis is the operator's decision."""
    assert not [m for m in kustomize_build("base") if m["kind"] == "Secret"]


def test_the_try_overlay_brings_a_redis_that_its_secret_points_at(try_overlay: list[Manifest]) -> None:
    secret_name = api_container(try_overlay)["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    secret = one(try_overlay, "Secret", secret_name)
    data = secret.get("stringData") or {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    match = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", data["REDIS_URL"])
    assert match, data["REDIS_URL"]
    redis_service = one(try_overlay, "Service", match.group(1))
    assert redis_service["spec"]["ports"][0]["port"] == int(match.group(2))
    redis = one(try_overlay, "Deployment", "redis")
    assert redis["spec"]["replicas"] == 1
    assert matches(redis_service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    api_pods = one(try_overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not matches(redis_service["spec"]["selector"], api_pods), "Redis Service picks API pods"
