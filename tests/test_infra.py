"""Static checks of the deployment files under infra/ (no cluster, cloud or network needed).

The Kubernetes manifests are parsed with PyYAML and linted with yamllint (infra/.yamllint);
the Cloud Run Terraform is parsed with python-hcl2. The properties checked are the ones calls
depend on: long WebSocket timeouts, probes on the right endpoints, drains that fit in the
platform's grace period, and secrets that never appear in plain text.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"
K8S = INFRA / "k8s"
CLOUD_RUN = INFRA / "terraform" / "cloud-run"

DRAIN_TIMEOUT_S = 600  # the server's default, also set in the Deployment
MAX_CALL_SECONDS = 3600
SECRET_NAMES = {"GEMINI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"}


# --- Kubernetes -------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] == kind]


def the(kind: str) -> dict[str, Any]:
    found = by_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    containers = the("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_every_yaml_parses_with_api_version_and_kind() -> None:
    docs = k8s_documents()
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
    }
    for d in docs:
        assert d.get("apiVersion") and d["metadata"]["name"] == "voice-agent"


def test_probes_use_readyz_for_readiness_and_healthz_for_liveness() -> None:
    c = container()
    port = c["ports"][0]
    assert port["containerPort"] == 8080
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_termination_grace_covers_prestop_and_the_whole_drain() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    c = container()
    drain = int(env(c)["DRAIN_TIMEOUT_S"]["value"])
    assert drain >= DRAIN_TIMEOUT_S
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert 5 <= pre_stop <= 30
    # A margin for the last goodbyes and the exit after the drain timeout.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 30


def test_rollout_never_removes_capacity_before_new_pods_are_up() -> None:
    strategy = the("Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_runs_as_non_root_with_a_read_only_root_filesystem() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = container()["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_resources_follow_the_measured_capacity() -> None:
    c = container()
    calls = int(env(c)["MAX_CONCURRENT_CALLS"]["value"])
    cpu = float(c["resources"]["requests"]["cpu"])
    # ~200 calls per core measured: keep headroom under it.
    assert calls <= 200 * cpu * 0.8
    memory_mib = int(c["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert memory_mib >= 95 + 0.5 * calls * 2  # base + per call, with 2x headroom
    assert "cpu" not in c["resources"].get("limits", {}), "a CPU limit throttles audio"


def test_production_settings() -> None:
    e = env(container())
    assert e["LIVE_SIMULATOR"]["value"] == "off"
    assert e["PUBLIC_URL"]["value"].startswith("https://")


def test_secrets_come_from_a_secret_never_in_plain_text() -> None:
    e = env(container())
    for name in SECRET_NAMES:
        assert "value" not in e[name], f"{name} in plain text"
        assert e[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert not by_kind("Secret"), "Secrets are created out of band, never committed"
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
    for pattern in (r"AIza[0-9A-Za-z_-]{20,}", r"AC[0-9a-f]{32}", r"\b[0-9a-f]{32}\b"):
        assert not re.search(pattern, text), f"something like a credential: {pattern}"


def test_hpa_scales_the_deployment_on_cpu() -> None:
    hpa = the("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == the("Deployment")["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 30 <= metric["resource"]["target"]["averageUtilization"] <= 70
    # Scale-down must not outpace the drains.
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_pdb_and_service_select_the_deployment_pods() -> None:
    labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        the("Service")["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
    assert the("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_ingress_keeps_websockets_open_for_the_longest_call() -> None:
    annotations = the("Ingress")["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) > MAX_CALL_SECONDS
    assert not any("affinity" in key for key in annotations), "one call = one socket"
    assert the("Ingress")["spec"]["tls"], "Twilio needs https/wss"


def test_yamllint_passes_on_infra() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(INFRA / ".yamllint"),
            str(K8S),
            str(INFRA / ".checkov.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Cloud Run (Terraform) --------------------------------------------------------------------


def unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on strings and keys, and adds __comments__ etc."""
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_tf(name: str) -> dict[str, Any]:
    with (CLOUD_RUN / name).open() as f:
        result: dict[str, Any] = unquote(hcl2.load(f))
    return result


def variable_defaults() -> dict[str, Any]:
    return {
        name: body.get("default")
        for block in load_tf("variables.tf")["variable"]
        for name, body in block.items()
    }


def resolve(value: Any) -> Any:
    """``${var.x}`` -> the variable's default; anything else as is."""
    if isinstance(value, str) and (m := re.fullmatch(r"\$\{var\.(\w+)\}", value)):
        return variable_defaults()[m.group(1)]
    return value


def resources(kind: str) -> list[dict[str, Any]]:
    return [
        body
        for block in load_tf("main.tf")["resource"]
        for k, named in block.items()
        if k == kind
        for body in named.values()
    ]


def service_template() -> dict[str, Any]:
    (service,) = resources("google_cloud_run_v2_service")
    (template,) = service["template"]
    return dict(template)


def cloud_run_container() -> dict[str, Any]:
    (c,) = service_template()["containers"]
    return dict(c)


def test_terraform_files_exist_and_parse() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert load_tf(name), name
    versions = load_tf("versions.tf")
    providers = versions["terraform"][0]["required_providers"][0]
    assert providers["google"]["source"] == "hashicorp/google"


def test_cloud_run_is_websocket_ready() -> None:
    template = service_template()
    assert template["timeout"] == f"{MAX_CALL_SECONDS}s"
    assert template["session_affinity"] is True
    (scaling,) = template["scaling"]
    assert resolve(scaling["min_instance_count"]) >= 1
    concurrency = resolve(template["max_instance_request_concurrency"])
    cpu = float(resolve(cloud_run_container()["resources"][0]["limits"]["cpu"]))
    assert 1 <= concurrency <= 200 * cpu * 0.6, "leave headroom under ~200 calls per core"


def test_cloud_run_cpu_is_always_allocated() -> None:
    (res,) = cloud_run_container()["resources"]
    assert res["cpu_idle"] is False


def test_cloud_run_probes_and_port() -> None:
    c = cloud_run_container()
    assert c["ports"][0]["container_port"] == 8080
    for probe in ("startup_probe", "liveness_probe"):
        assert c[probe][0]["http_get"][0]["path"] == "/healthz", probe
    # PORT is reserved on Cloud Run (set from container_port): it must not be in the env.
    assert not re.search(r"\bPORT\s*=", locals_block())


def locals_block() -> str:
    text = (CLOUD_RUN / "main.tf").read_text()
    return text.split("locals {", 1)[1].split("\n}\n", 1)[0]


def test_cloud_run_secrets_only_by_reference() -> None:
    text = "\n".join(p.read_text() for p in CLOUD_RUN.glob("*.tf"))
    # No secret values in Terraform state: no secret versions, no secret data.
    assert "google_secret_manager_secret_version" not in text
    assert "secret_data" not in text
    assert not re.search(r"AIza[0-9A-Za-z_-]{20,}|AC[0-9a-f]{32}|\b[0-9a-f]{32}\b", text)
    # The secrets are existing Secret Manager secrets, referenced by id.
    secret_ids = variable_defaults()["secret_ids"]
    assert secret_ids.keys() == SECRET_NAMES
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", v) for v in secret_ids.values())

    envs = [d["env"] for d in cloud_run_container()["dynamic"] if "env" in d]
    (secret_env,) = [e for e in envs if "value_source" in e["content"][0]]
    assert secret_env["for_each"] == "${var.secret_ids}"
    ref = secret_env["content"][0]["value_source"][0]["secret_key_ref"][0]
    assert ref == {"secret": "${env.value}", "version": "latest"}
    # The plain env carries no secret (and the container has no static env blocks).
    (plain,) = [e for e in envs if "value_source" not in e["content"][0]]
    assert plain["for_each"] == "${local.env}"
    assert "env" not in cloud_run_container()
    assert not SECRET_NAMES & set(re.findall(r"\b([A-Z_]+)\s*=", locals_block()))


def test_cloud_run_production_settings() -> None:
    block = locals_block()
    assert re.search(r'LIVE_SIMULATOR\s*=\s*"off"', block)
    assert re.search(r"PUBLIC_URL\s*=", block)
    # Cloud Run kills 10 s after SIGTERM: the drain must fit.
    (drain,) = re.findall(r'DRAIN_TIMEOUT_S\s*=\s*"(\d+)"', block)
    assert int(drain) < 10


def test_cloud_run_identity_reads_only_the_listed_secrets() -> None:
    (grant,) = resources("google_secret_manager_secret_iam_member")
    assert grant["for_each"] == "${var.secret_ids}"
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    assert grant["member"] == "serviceAccount:${google_service_account.agent.email}"
    assert service_template()["service_account"] == "${google_service_account.agent.email}"


def test_cloud_run_is_public_with_twilio_signatures_as_auth() -> None:
    (invoker,) = resources("google_cloud_run_v2_service_iam_member")
    assert invoker["role"] == "roles/run.invoker"
    assert invoker["member"] == "allUsers"
    assert "X-Twilio-Signature" in (CLOUD_RUN / "main.tf").read_text()


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.tf")), ids=lambda p: p.name)
def test_terraform_has_no_tabs_or_trailing_spaces(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert "\t" not in line and line == line.rstrip(), f"{path.name}:{number}"
