"""The Kubernetes manifests: every rendered overlay validates offline against the Kubernetes schemas, and
the pieces fit together (probes, draining, security, autoscaling, monitoring, GPU scheduling)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import ROOT, check_settings, find, kustomize

# Oldest supported release (the preStop `sleep` action needs 1.30) and the newest schemas installed.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version() + ".0")
# Custom resources: no core schema; checked structurally below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
ADAPTER_VALUES = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"


def _validate_all(manifests: list[dict]) -> None:
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{name} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_every_rendered_manifest_validates(overlay: tuple[str, list[dict]]) -> None:
    name, manifests = overlay
    kinds = {m["kind"] for m in manifests}
    expected = {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}
    assert expected <= kinds, f"overlay {name} lacks {expected - kinds}"
    assert {(m["apiVersion"], m["kind"]) for m in manifests if m["kind"] == "ServiceMonitor"} <= CRD_KINDS
    _validate_all(manifests)


def test_validation_is_strict() -> None:
    """The schemas do catch mistakes: an unknown field and a wrong type are rejected."""
    deployment = find(kustomize(ROOT / "deploy" / "k8s" / "overlays" / "cpu"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    container["readinessProbe"]["httpGet"] = container["readinessProbe"].pop("httpGett")
    container["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_components_render_valid() -> None:
    """The optional models-pvc component, on top of an overlay, still renders valid manifests."""
    with tempfile.TemporaryDirectory(dir=ROOT / "deploy" / "k8s") as tmp:
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": ["../overlays/cpu"], "components": ["../components/models-pvc"]}
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        manifests = kustomize(Path(tmp))
    _validate_all(manifests)
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "clipserve-models" for v in pod["volumes"])


@pytest.mark.parametrize("overlay_name", ["cpu", "gpu"])
def test_api_keys_component_mounts_the_secret_as_the_key_file(
    overlay_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The api-keys component: the Secret clipserve-api-keys, read-only at the path CLIPSERVE_API_KEY_FILE
    names, required (no pod runs open by mistake); the server reads such a file as its keys."""
    with tempfile.TemporaryDirectory(dir=ROOT / "deploy" / "k8s") as tmp:
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": [f"../overlays/{overlay_name}"],
                         "components": ["../components/api-keys", "../components/models-pvc"]}
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        manifests = kustomize(Path(tmp))
    _validate_all(manifests)
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")["secret"]
    assert volume["secretName"] == "clipserve-api-keys" and not volume.get("optional", False)
    (item,) = volume["items"]
    assert env["CLIPSERVE_API_KEY_FILE"] == f"{mount['mountPath']}/{item['path']}"
    assert {m["name"] for m in container["volumeMounts"]} >= {"tmp", "models", "api-keys"}  # merged, not replaced

    secret = tmp_path / item["path"]  # what the kubelet writes from the Secret's `keys` entry
    secret.write_text("# clipserve API keys\nkey-one\nkey-two\n")
    check_settings({**_settings(manifests), "CLIPSERVE_API_KEY_FILE": str(secret)}, monkeypatch)
    from service.config import Settings

    keys = Settings().api_key_set()
    assert len(keys) == 2 and keys.accepts("key-two")


def test_the_base_runs_without_api_keys() -> None:
    """No key in the base (the api-keys component adds one): nothing names a key the cluster lacks."""
    manifests = kustomize(ROOT / "deploy" / "k8s" / "overlays" / "cpu")
    assert not any(k.startswith("CLIPSERVE_API_KEY") for k in _settings(manifests))
    assert not any(e["name"].startswith("CLIPSERVE_API_KEY") for e in _container(manifests).get("env", []))


def _container(manifests: list[dict]) -> dict:
    return find(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _settings(manifests: list[dict]) -> dict[str, str]:
    container = _container(manifests)
    (ref,) = container["envFrom"]
    return find(manifests, "ConfigMap", ref["configMapRef"]["name"])["data"]


def test_probes_and_ports(overlay: tuple[str, list[dict]]) -> None:
    _, manifests = overlay
    container = _container(manifests)
    settings = _settings(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(settings["CLIPSERVE_PORT"]), "grpc": int(settings["CLIPSERVE_GRPC_PORT"])}
    assert settings["CLIPSERVE_HOST"] == "0.0.0.0"
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # No Service links: a Service named clipserve would inject CLIPSERVE_PORT=tcp://...
    assert find(manifests, "Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False
    service = find(manifests, "Service", "clipserve")
    assert {(p["name"], p["port"], p["targetPort"], p.get("appProtocol")) for p in service["spec"]["ports"]} == {
        ("http", ports["http"], "http", "http"), ("grpc", ports["grpc"], "grpc", "grpc")}
    headless = find(manifests, "Service", "clipserve-headless")
    assert headless["spec"]["clusterIP"] == "None"
    labels = find(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= labels.items()


def test_drain_fits_in_the_grace_period(overlay: tuple[str, list[dict]]) -> None:
    """preStop sleep + the server's drain timeout must end before the kubelet's SIGKILL."""
    _, manifests = overlay
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(_settings(manifests)["CLIPSERVE_DRAIN_TIMEOUT_S"])
    assert pre_stop > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


def test_security_context(overlay: tuple[str, list[dict]]) -> None:
    _, manifests = overlay
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The read-only root file system leaves /tmp (an emptyDir) as the one writable place.
    tmp = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    namespace = find(manifests, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_autoscaling_on_cpu_and_queue_depth(overlay: tuple[str, list[dict]]) -> None:
    _, manifests = overlay
    hpa = find(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", find(manifests, "Deployment")["metadata"]["name"])
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    pods_metric = metrics["Pods"]["pods"]["metric"]["name"]
    # The custom metric must be one that the Prometheus Adapter rules serve.
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert pods_metric in {rule["name"]["as"] for rule in rules}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # CPU utilisation is relative to the request: the container must request CPU.
    assert "cpu" in _container(manifests)["resources"]["requests"]
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        find(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"].items())


def test_service_monitor_scrapes_the_metrics_port(overlay: tuple[str, list[dict]]) -> None:
    """ServiceMonitor (a CRD: no core schema) checked structurally: it selects exactly the main Service
    (not the headless one, which would scrape each pod twice) and names its http port and /metrics."""
    _, manifests = overlay
    monitor = find(manifests, "ServiceMonitor")
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel", "podTargetLabels"}
    selected = [s for s in manifests if s["kind"] == "Service"
                and spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["clipserve"]
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert endpoint["port"] == "http"


def test_network_policy_admits_the_serving_ports(overlay: tuple[str, list[dict]]) -> None:
    _, manifests = overlay
    policy = find(manifests, "NetworkPolicy")
    labels = find(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {p["containerPort"] for p in _container(manifests)["ports"]}


def test_gpu_overlay_schedules_on_gpus() -> None:
    manifests = kustomize(ROOT / "deploy" / "k8s" / "overlays" / "gpu")
    container = _container(manifests)
    assert container["image"].endswith(":gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    assert _settings(manifests)["CLIPSERVE_DEVICE"] == "cuda"
    cpu = kustomize(ROOT / "deploy" / "k8s" / "overlays" / "cpu")
    assert "nvidia.com/gpu" not in _container(cpu)["resources"].get("limits", {})
    assert _settings(cpu)["CLIPSERVE_DEVICE"] == "cpu"


def test_config_map_holds_valid_settings(overlay: tuple[str, list[dict]], monkeypatch: pytest.MonkeyPatch) -> None:
    _, manifests = overlay
    check_settings(_settings(manifests), monkeypatch)
