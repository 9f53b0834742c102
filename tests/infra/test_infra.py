"""Static checks of the deployment files under infra/ (no cluster, cloud or network needed).

The Kubernetes manifests are parsed with PyYAML, linted with yamllint (infra/.yamllint) and
validated against the Kubernetes API's own schemas (kubernetes-validate, bundled: offline);
the Cloud Run Terraform is parsed with python-hcl2; checkov scans all of infra/ (Dockerfile
included) from its own venv, offline. The properties checked are the ones calls depend on: long
WebSocket timeouts, probes on the right endpoints, drains that fit in the platform's grace
period, call records in a shared database, and secrets that never appear in plain text.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2
import kubernetes_validate
import pytest
import yaml

from support import ROOT, dockerfile_instructions

INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
CLOUD_RUN = INFRA / "terraform" / "cloud-run"

DRAIN_TIMEOUT_S = 600  # the server's default, also set in the Deployment
MAX_CALL_SECONDS = 3600
#: Calls per core that ``bench/capacity.py`` measured (docs/capacity.md: 7.7 ms of CPU per
#: call-second at 100 calls, all features on, the development VM at its slowest in December
#: 2026) and the sizing rule applied to it.
MEASURED_CALLS_PER_CORE = 130
SIZING = 0.7
# DATABASE_URL is a secret too: a Postgres URL carries its password.
SECRET_NAMES = {
    "GEMINI_API_KEY",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "DATABASE_URL",
    "API_TOKEN",
}
# The newest Kubernetes whose schemas kubernetes-validate (>= 1.37) bundles.
K8S_VERSION = "1.37"
# Credentials in a URL (scheme://user:password@host), e.g. a database URL pasted in.
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@:]+:[^\s/@]+@")


# --- Kubernetes -------------------------------------------------------------------------------


def manifests() -> list[Path]:
    """The Kubernetes objects' files (kustomization.yaml is kustomize's, not the API's)."""
    return [p for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifests():
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
    # The sizing rule under the measured calls per core.
    assert calls <= MEASURED_CALLS_PER_CORE * cpu * SIZING
    memory_mib = int(c["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert memory_mib >= 135 + 0.6 * calls * 2  # base + per call, with 2x headroom
    assert "cpu" not in c["resources"].get("limits", {}), "a CPU limit throttles audio"


def test_production_settings() -> None:
    e = env(container())
    assert e["LIVE_SIMULATOR"]["value"] == "off"
    assert e["PUBLIC_URL"]["value"].startswith("https://")


def test_metrics_are_served_off_the_call_port() -> None:
    """/metrics on METRICS_PORT, a container port the Service (and so the Ingress) never
    routes to; Prometheus scrapes the pods."""
    c = container()
    metrics_port = int(env(c)["METRICS_PORT"]["value"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "metrics": metrics_port}
    assert [p["targetPort"] for p in the("Service")["spec"]["ports"]] == ["http"]
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)


def test_the_records_spool_is_on_the_writable_tmp_volume_and_fits_in_it() -> None:
    """The root filesystem is read-only: the spool (records the database refused) must be on
    the /tmp emptyDir, bounded under its size limit (exceeding it evicts the pod)."""
    e = env(container())
    spool = e["RECORDS_SPOOL_DIR"]["value"]
    (mount,) = [m for m in container()["volumeMounts"] if spool.startswith(m["mountPath"] + "/")]
    pod = the("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    limit_mib = int(volume["emptyDir"]["sizeLimit"].removesuffix("Mi"))
    assert int(e["RECORDS_SPOOL_MAX_MB"]["value"]) * 1.048576 <= limit_mib * 0.75


def test_secrets_come_from_a_secret_never_in_plain_text() -> None:
    e = env(container())
    for name in SECRET_NAMES:
        assert "value" not in e[name], f"{name} in plain text"
        ref = e[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "voice-agent-secrets", "key": name}
    assert not by_kind("Secret"), "Secrets are created out of band, never committed"
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
    for pattern in (r"AIza[0-9A-Za-z_-]{20,}", r"AC[0-9a-f]{32}", r"\b[0-9a-f]{32}\b"):
        assert not re.search(pattern, text), f"something like a credential: {pattern}"


def test_call_records_go_to_a_database_shared_by_every_pod() -> None:
    """DATABASE_URL is required (no ``optional: true``): a pod without it would fall back to
    sqlite:///calls.db, one file per pod, lost with the pod and unwritable on the read-only root
    filesystem. Failing to start (CreateContainerConfigError) is the clear outcome."""
    e = env(container())
    for name in ("DATABASE_URL", "API_TOKEN"):
        assert "optional" not in e[name]["valueFrom"]["secretKeyRef"], name


# --- Kubernetes: the API's own schemas ---------------------------------------------------------


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """What the API server of Kubernetes K8S_VERSION would reject in ``doc``.

    Strict: an unknown or misplaced field is an error (kubectl apply refuses it too since 1.27).
    A kind/apiVersion without a schema (a typo, or an API removed since) is an error here,
    where kubernetes-validate's own CLI only warns. The first problem per object is reported.
    """
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top level)"
        return [f"{name}: {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: {exc.message}"]
    return []


def manifest_schema_errors(path: Path) -> list[str]:
    return [
        f"{path.name}: {error}"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
        for error in schema_errors(doc)
    ]


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_api_schema(path: Path) -> None:
    assert manifest_schema_errors(path) == []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            # Validated against K8S_VERSION itself, not silently against an older schema set.
            assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


def deployment_container(doc: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers[0]


def misspell_secret_ref(doc: dict[str, Any]) -> None:
    value_from = env(deployment_container(doc))["DATABASE_URL"]["valueFrom"]
    value_from["secretKeyref"] = value_from.pop("secretKeyRef")


BROKEN_MANIFESTS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "misspelled container field": (
        "Deployment",
        lambda d: deployment_container(d).update(imagePullPolcy="Always"),
        "'imagePullPolcy' was unexpected",
    ),
    "pod field inside the container": (
        "Deployment",
        lambda d: deployment_container(d).update(terminationGracePeriodSeconds=660),
        "'terminationGracePeriodSeconds' was unexpected",
    ),
    "misspelled secretKeyRef": (
        "Deployment",
        misspell_secret_ref,
        "'secretKeyref' was unexpected",
    ),
    "string where an integer goes": (
        "Deployment",
        lambda d: d["spec"].update(replicas="two"),
        "spec.replicas: 'two' is not of type 'integer'",
    ),
    "container without a name": (
        "Deployment",
        lambda d: deployment_container(d).pop("name"),
        "'name' is a required property",
    ),
    "unquoted number in an annotation": (
        "Ingress",
        lambda d: d["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/proxy-read-timeout": 3700}
        ),
        "3700 is not of type 'string'",
    ),
    "networking/v1beta1-style Ingress backend": (
        "Ingress",
        lambda d: d["spec"]["rules"][0]["http"]["paths"][0].update(
            backend={"serviceName": "voice-agent", "servicePort": 80}
        ),
        "'serviceName', 'servicePort' were unexpected",
    ),
    "API version removed from Kubernetes": (
        "HorizontalPodAutoscaler",
        lambda d: d.update(apiVersion="autoscaling/v2beta2"),
        "Couldn't find schema for kind HorizontalPodAutoscaler with api version "
        "autoscaling/v2beta2",
    ),
}


@pytest.mark.parametrize("case", BROKEN_MANIFESTS, ids=str)
def test_schema_validation_rejects_a_broken_manifest(case: str, tmp_path: Path) -> None:
    """The validation above is not vacuous: one mistake in a copy of a real manifest, written
    to a file and checked by the same function, is reported."""
    kind, break_it, expected = BROKEN_MANIFESTS[case]
    doc = copy.deepcopy(the(kind))
    assert schema_errors(doc) == []
    break_it(doc)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    (error,) = manifest_schema_errors(path)
    assert expected in error
    assert error.startswith(f"broken.yaml: {kind}/voice-agent: ")


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
    assert 1 <= concurrency <= MEASURED_CALLS_PER_CORE * cpu * SIZING, "the sizing rule"
    # The server's own limit stays above Cloud Run's, so Cloud Run's binds first (it routes a
    # call elsewhere instead of the server answering it with "busy").
    assert variable_defaults()["max_concurrent_calls"] >= concurrency


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
    assert secret_ids["DATABASE_URL"] == "database-url"
    assert secret_ids["API_TOKEN"] == "api-token"
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


def variable(name: str) -> dict[str, Any]:
    (body,) = [b[name] for b in load_tf("variables.tf")["variable"] if name in b]
    return dict(body)


def test_cloud_run_requires_a_shared_database_and_an_api_token() -> None:
    """Overriding secret_ids without DATABASE_URL would silently give every instance its own
    SQLite file (the server's default), so the variable refuses it; the description says why."""
    secret_ids = variable("secret_ids")
    (validation,) = secret_ids["validation"]
    for name in ("DATABASE_URL", "API_TOKEN"):
        assert f'"{name}"' in validation["condition"]
    description = " ".join(secret_ids["description"].split())
    assert "postgresql+psycopg://" in description
    assert "sqlite:///calls.db" in description and "not suitable" in description
    # DATABASE_URL and API_TOKEN are never plain env (their values would be in state).
    assert not re.search(r"\b(DATABASE_URL|API_TOKEN)\s*=", locals_block())
    (env_validation,) = variable("env")["validation"]
    for name in SECRET_NAMES:
        assert f'"{name}"' in env_validation["condition"], name


def test_cloud_run_mounts_the_listed_cloud_sql_instances() -> None:
    """Cloud SQL through its Unix sockets under /cloudsql, with the client role, only when
    instances are listed (otherwise DATABASE_URL reaches Postgres by address)."""
    assert variable("cloud_sql_instances")["default"] == []
    only_with_instances = "${length(var.cloud_sql_instances) > 0 ? [1] : []}"
    (volumes,) = [d["volumes"] for d in service_template()["dynamic"] if "volumes" in d]
    assert volumes["for_each"] == only_with_instances
    (content,) = volumes["content"]
    assert content["cloud_sql_instance"] == [{"instances": "${var.cloud_sql_instances}"}]
    (mounts,) = [
        d["volume_mounts"] for d in cloud_run_container()["dynamic"] if "volume_mounts" in d
    ]
    assert mounts["for_each"] == only_with_instances
    assert mounts["content"] == [{"name": content["name"], "mount_path": "/cloudsql"}]

    (grant,) = resources("google_project_iam_member")
    assert grant["count"] == "${length(var.cloud_sql_instances) > 0 ? 1 : 0}"
    assert grant["role"] == "roles/cloudsql.client"
    assert grant["member"] == "serviceAccount:${google_service_account.agent.email}"
    (service,) = resources("google_cloud_run_v2_service")
    assert "${google_project_iam_member.cloudsql_client}" in service["depends_on"]


def test_no_credentials_in_urls_anywhere_in_infra() -> None:
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file()):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not URL_CREDENTIALS.search(line), f"{path.relative_to(INFRA)}:{number}"


def test_cloud_run_production_settings() -> None:
    block = locals_block()
    assert re.search(r'LIVE_SIMULATOR\s*=\s*"off"', block)
    assert re.search(r"PUBLIC_URL\s*=", block)
    # Cloud Run kills 10 s after SIGTERM: the drain must fit.
    (drain,) = re.findall(r'DRAIN_TIMEOUT_S\s*=\s*"(\d+)"', block)
    assert int(drain) < 10
    # The records spool needs a writable directory: /tmp is the one Cloud Run has.
    assert re.search(r'RECORDS_SPOOL_DIR\s*=\s*"/tmp/', block)


def test_cloud_run_keeps_metrics_off_the_public_url() -> None:
    # Cloud Run routes only container_port: another METRICS_PORT is unreachable from outside.
    (port,) = re.findall(r'METRICS_PORT\s*=\s*"(\d+)"', locals_block())
    assert int(port) != cloud_run_container()["ports"][0]["container_port"]


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


# --- Dockerfile ----------------------------------------------------------------------------------


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_image_installs_the_project_with_the_postgres_driver() -> None:
    """Production's DATABASE_URL is postgresql+psycopg://: the image carries the `postgres`
    extra, which must exist in pyproject.toml under the project's name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(
        r.startswith("psycopg[binary]") for r in project["optional-dependencies"]["postgres"]
    )
    build = " ".join(args for name, args in dockerfile_instructions() if name == "RUN")
    assert '--wheel-dir /wheels ".[postgres]"' in build
    (install,) = [args for name, args in final_stage() if name == "RUN" and "pip install" in args]
    assert f'"{project["name"]}[postgres]"' in install
    assert "--no-index" in install, "the final stage installs only the wheels built before"
    assert "--mount=type=bind,from=build,source=/wheels" in install
    # Both stages install the versions CI tested: the lock.
    assert "--constraint constraints.txt" in build
    assert "--constraint /wheels/constraints.txt" in install
    assert not any(name in {"COPY", "ADD"} for name, _ in final_stage()), "no wheel layer"


def test_image_runs_non_root_with_exec_form_entrypoint_and_health_check() -> None:
    stage: dict[str, list[str]] = {}
    for name, args in final_stage():
        stage.setdefault(name, []).append(args)
    assert re.fullmatch(r"[1-9][0-9]*", stage["USER"][-1]), "numeric non-root uid"
    assert json.loads(stage["ENTRYPOINT"][-1]) == ["voice-agent", "serve"]
    assert "/healthz" in stage["HEALTHCHECK"][-1]
    # A writable working directory (the user's home) for relative defaults like calls.db.
    assert stage["WORKDIR"] == ["/home/agent"]
    assert any("--uid 10001 --create-home agent" in args for args in stage["RUN"])


# --- checkov ---------------------------------------------------------------------------------


def checkov_pin() -> str:
    """The exact version of infra/checkov-requirements.txt (new checkov releases add checks)."""
    (pin,) = re.findall(
        r"^checkov==([\w.]+)$", (INFRA / "checkov-requirements.txt").read_text(), re.M
    )
    return str(pin)


def checkov_executable() -> Path:
    """checkov's own venv, created by `make install` (``$CHECKOV`` overrides): installed into
    the project's venv, checkov would downgrade `packaging` and replace python-hcl2's `hcl2`."""
    return Path(os.environ.get("CHECKOV") or Path(sys.prefix) / "checkov" / "bin" / "checkov")


def test_checkov_finds_nothing_offline() -> None:
    """Always runs (a missing checkov fails, it is never skipped): ~3 s, no network. The
    update check and Prisma Cloud downloads are off, and proxies point nowhere in case."""
    checkov = checkov_executable()
    assert checkov.is_file(), (
        f"no checkov at {checkov}: run `make install` (a venv from "
        "infra/checkov-requirements.txt) or set CHECKOV to a checkov executable"
    )
    nowhere = "http://127.0.0.1:9"
    offline = {
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
        "BC_SKIP_MAPPING": "TRUE",
        **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), nowhere),
        "NO_PROXY": "",
        "no_proxy": "",
    }
    result = subprocess.run(
        [str(checkov), "--config-file", str(INFRA / ".checkov.yaml"), "--output", "json"],
        cwd=ROOT,
        env={**os.environ, **offline},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.stdout.startswith(("[", "{")), result.stdout + result.stderr
    parsed = json.loads(result.stdout)
    reports = {r["check_type"]: r for r in (parsed if isinstance(parsed, list) else [parsed])}
    failures = [
        f"{f['check_id']} {f['file_path']} {f['resource']}: {f['check_name']}"
        for r in reports.values()
        for f in r["results"]["failed_checks"]
    ]
    assert failures == [] and result.returncode == 0, "\n".join(failures) or result.stderr
    # Not vacuous: each framework parsed its files and ran checks, with the pinned checkov.
    for framework in ("kubernetes", "dockerfile", "terraform"):
        summary = reports[framework]["summary"]
        assert summary["passed"] > 0 and summary["parsing_errors"] == 0, (framework, summary)
    assert {r["summary"]["checkov_version"] for r in reports.values()} == {checkov_pin()}


def test_every_checkov_skip_has_a_reason() -> None:
    """A skipped check in infra/.checkov.yaml is a decision: the comment above it says why."""
    lines = (INFRA / ".checkov.yaml").read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if re.fullmatch(r"\s+- CKV\w+", line)]
    assert skips
    for i in skips:
        assert lines[i - 1].strip().startswith("#"), f"no reason above {lines[i].strip()}"
    # Inline skips too (checkov:skip=ID: reason).
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file()):
        for skip in re.findall(r"#\s*checkov:skip=(.*)", path.read_text()):
            assert re.fullmatch(r"CKV\w+:\s*\S.{9,}", skip), f"{path.name}: {skip}"
    config = yaml.safe_load((INFRA / ".checkov.yaml").read_text())
    assert config["skip-download"] is True, "offline: no Prisma Cloud downloads"
    assert set(config["framework"]) >= {"kubernetes", "dockerfile", "terraform", "secrets"}


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.tf")), ids=lambda p: p.name)
def test_terraform_has_no_tabs_or_trailing_spaces(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert "\t" not in line and line == line.rstrip(), f"{path.name}:{number}"


# --- Docker Compose (local development) -------------------------------------------------------

COMPOSE = ROOT / "compose.yaml"


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def test_compose_runs_the_production_image_with_postgres_for_records() -> None:
    services = compose()["services"]
    assert set(services) == {"agent", "db"}
    agent = services["agent"]
    assert agent["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}
    assert (ROOT / agent["build"]["dockerfile"]).is_file()
    url = agent["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url
    db = services["db"]
    assert db["image"].startswith("postgres:")
    user, password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)
    database = url.rsplit("/", 1)[1]
    env = db["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        user,
        password,
        database,
    )
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"]), "records persist"
    assert set(compose()["volumes"]) == {v.split(":", 1)[0] for v in db["volumes"]}


def test_compose_starts_the_agent_once_the_database_is_ready() -> None:
    services = compose()["services"]
    assert services["agent"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    check = services["db"]["healthcheck"]
    assert check["test"][0] == "CMD-SHELL" and "pg_isready" in check["test"][1]
    assert check["retries"] * int(check["interval"].rstrip("s")) >= 30


def test_compose_lets_a_drain_finish_before_it_kills_the_agent() -> None:
    agent = compose()["services"]["agent"]
    drain = float(agent["environment"]["DRAIN_TIMEOUT_S"])
    grace = float(agent["stop_grace_period"].rstrip("s"))
    assert grace > drain


def test_compose_reads_the_operators_env_file_and_publishes_the_port() -> None:
    agent = compose()["services"]["agent"]
    assert agent["env_file"] == [{"path": ".env", "required": False}]
    assert agent["ports"] == ["8080:8080"]
    assert ".env" in (ROOT / ".gitignore").read_text().split(), "a .env never gets committed"


def test_yamllint_passes_on_compose() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(INFRA / ".yamllint"),
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile lint ---------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(INFRA / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_an_unpinned_pip_install(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install --no-cache-dir gemini-phone-agent\n")
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "DL3013" in result.stdout
