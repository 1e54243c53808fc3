"""The Kubernetes manifests (k8s/): every overlay renders with `kubectl kustomize`, validates
strictly against the Kubernetes schemas, and stays true to the service it deploys: the settings it
sets exist, the probes hit the health port the settings name, the grace period covers the drain,
the autoscaler and the disruption budget find the pods, and every image can be replaced."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from stt_service.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = ("whisper-http", "sagemaker", "gpu", "jetstream")
# the one target that scales out: each session on one replica (STT_MODE=jetstream)
SCALE_OUT = "overlays/jetstream"
TARGETS = ("base", *(f"overlays/{o}" for o in OVERLAYS))
# the oldest Kubernetes the manifests are written for, and a recent one
KUBERNETES_VERSIONS = ("1.29", "1.33")
KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}

# Environment variables the manifests may set besides the service's own settings: standard names
# read by the libraries in the image (the AWS SDK, the OpenTelemetry SDK, huggingface_hub, CUDA).
STANDARD_PREFIXES = ("AWS_", "OTEL_")
STANDARD_NAMES = frozenset({"HF_HOME", "HF_HUB_OFFLINE", "CUDA_CACHE_PATH"})


def _setting_names() -> frozenset[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
    return frozenset(names)


SETTING_NAMES = _setting_names()


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl not found: install kubectl >= 1.27, whose built-in kustomize v5 renders "
            "k8s/ (apt package `kubectl` from the Kubernetes or Google Cloud repository; Debian's "
            "own kubernetes-client 1.20 is too old)",
            pytrace=False,
        )
    return kubectl


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed: one dict per document."""
    done = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.fail(
            f"kubectl kustomize {directory} failed (kubectl >= 1.27 needed):\n{done.stderr}",
            pytrace=False,
        )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def _rendered(target: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / target))


class Rendered:
    """One rendered target, with the lookups the tests share."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.docs = list(_rendered(target))

    def one(self, kind: str) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind]
        assert len(found) == 1, f"{self.target}: expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def containers(self) -> list[dict[str, Any]]:
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    @property
    def worker(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            c for c in self.pod["containers"] if c["name"] == "stt-service"
        ]
        assert len(found) == 1, f"{self.target}: one container named stt-service"
        return found[0]

    @property
    def config(self) -> dict[str, str]:
        """The data of the ConfigMap the worker takes its environment from."""
        names = [e["configMapRef"]["name"] for e in self.worker["envFrom"] if "configMapRef" in e]
        assert len(names) == 1, f"{self.target}: one ConfigMap in envFrom, got {names}"
        maps = [d for d in self.docs if d["kind"] == "ConfigMap"]
        (cm,) = (m for m in maps if m["metadata"]["name"] == names[0])
        data: dict[str, str] = cm.get("data", {})
        return data


@pytest.fixture(params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param)


# --- schemas -------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_validates_strictly(rendered: Rendered, version: str) -> None:
    assert {d["kind"] for d in rendered.docs} == KINDS
    errors = []
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    assert not errors, f"{rendered.target} is invalid for Kubernetes {version}:\n" + "\n".join(
        errors
    )


def test_everything_lands_in_one_overridable_namespace(rendered: Rendered) -> None:
    assert {d["metadata"].get("namespace") for d in rendered.docs} == {"ai-ml"}
    for kustomization in K8S.rglob("kustomization.yaml"):
        text = kustomization.read_text()
        assert "kind: Namespace" not in text  # set by `namespace:`, never created here


# --- the service's settings ----------------------------------------------------------------------
def _env_names(r: Rendered) -> set[str]:
    names = set(r.config)
    for container in r.containers:
        names.update(e["name"] for e in container.get("env", []))
    return names


def test_every_variable_is_a_setting_or_a_standard_name(rendered: Rendered) -> None:
    unknown = {
        n
        for n in _env_names(rendered)
        if n not in SETTING_NAMES
        and n not in STANDARD_NAMES
        and not n.startswith(STANDARD_PREFIXES)
    }
    assert not unknown, f"{rendered.target} sets variables the service does not read: {unknown}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read only what the test passes, as in a pod with nothing but the manifests."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


# backend and what else each target must configure
EXPECTED_BACKEND = {
    "base": ("whisper-http", {"whisper_url"}),
    "overlays/whisper-http": ("whisper-http", {"whisper_url"}),
    "overlays/sagemaker": ("flux", {"sagemaker_endpoint_name", "aws_region"}),
    "overlays/gpu": ("whisper", set()),
    "overlays/jetstream": ("whisper-http", {"whisper_url"}),
}


@pytest.mark.usefixtures("clean_env")
def test_the_config_map_loads_as_the_pod_would(rendered: Rendered) -> None:
    # a file named by a setting exists only in the pod (none is in the ConfigMaps as shipped)
    values = {
        k.lower(): v
        for k, v in rendered.config.items()
        if not k.endswith("_FILE") and k != "AWS_CA_BUNDLE"
    }
    settings = load_settings(**values)
    backend, needed = EXPECTED_BACKEND[rendered.target]
    assert settings.stt_backend == backend
    for field in needed:
        assert getattr(settings, field), f"{rendered.target}: {field.upper()} is empty"
    if rendered.target == "overlays/sagemaker":
        assert settings.resolved_deepgram_transport() == "sagemaker"
    if rendered.target == "overlays/gpu":
        assert settings.whisper_device == "cuda"
    # set explicitly, so the grace period and the probes below are checked against real values
    assert {"STT_DRAIN_TIMEOUT", "STT_HEALTH_PORT", "NATS_URL"} <= set(rendered.config)


# --- pod lifecycle -------------------------------------------------------------------------------
def test_the_grace_period_covers_the_drain(rendered: Rendered) -> None:
    drain = float(rendered.config["STT_DRAIN_TIMEOUT"])
    grace = rendered.pod["terminationGracePeriodSeconds"]
    # the subscription drains for up to half of STT_DRAIN_TIMEOUT, then the sessions get all of
    # it, then NATS flushes: twice the drain plus 10 s before the kubelet's SIGKILL
    assert grace > drain
    assert grace >= 2 * drain + 10, f"{rendered.target}: grace {grace} s for a {drain:g} s drain"
    assert "preStop" not in rendered.worker.get("lifecycle", {})


def test_probes_hit_the_health_port_the_settings_name(rendered: Rendered) -> None:
    port = int(rendered.config["STT_HEALTH_PORT"])
    ports = {p["name"]: p["containerPort"] for p in rendered.worker["ports"]}
    assert ports["health"] == port
    worker = rendered.worker
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if kind in worker:
            probe = worker[kind]["httpGet"]
            assert probe["path"] in ("/healthz", "/readyz")
            assert ports.get(probe["port"], probe["port"]) == port, f"{kind} misses the port"
    (service_port,) = rendered.one("Service")["spec"]["ports"]
    assert service_port["name"] == "health"
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == port


def test_pods_run_locked_down(rendered: Rendered) -> None:
    pod = rendered.pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in rendered.containers:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # the one writable place
        for path, name in mounts.items():
            if "secret" in volumes[name]:
                assert volumes[name]["secret"]["optional"] is True, path
        resources = container["resources"]
        for key in ("cpu", "memory"):
            assert key in resources["requests"] and key in resources["limits"], key


def test_secrets_are_optional_references_never_shipped(rendered: Rendered) -> None:
    assert not [d for d in rendered.docs if d["kind"] == "Secret"]
    worker = rendered.worker
    for env in worker["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["optional"] is True and ref["key"] == env["name"], env
    for source in worker["envFrom"]:
        if "secretRef" in source:
            assert source["secretRef"]["optional"] is True


def _referenced_secrets(r: Rendered) -> set[str]:
    names = {v["secret"]["secretName"] for v in r.pod["volumes"] if "secret" in v}
    for container in r.containers:
        names.update(
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        )
        names.update(s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s)
    return names


def test_the_secret_example_matches_what_the_pods_read() -> None:
    example = K8S / "base" / "secret.example.yaml"
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "secret.example.yaml" not in yaml.safe_load(kustomization.read_text()).get(
            "resources", []
        )
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    base = Rendered("base")
    assert {d["metadata"]["name"] for d in docs} == _referenced_secrets(base)
    # the example NATS Secret names its file by the path it is mounted at
    mount = next(m for m in base.worker["volumeMounts"] if m["name"] == "nats-auth")
    (nats,) = (d for d in docs if d["metadata"]["name"] == "stt-service-nats")
    path = Path(nats["stringData"]["NATS_CREDS_FILE"])
    assert path.parent == Path(mount["mountPath"]) and path.name in nats["stringData"]


# --- scaling and disruptions ---------------------------------------------------------------------
def test_the_autoscaler_targets_the_deployment(rendered: Rendered) -> None:
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": rendered.deployment["metadata"]["name"],
    }
    if rendered.target != SCALE_OUT:
        # core mode: every replica subscribes to every session, so more would duplicate results
        assert hpa["spec"]["minReplicas"] == hpa["spec"]["maxReplicas"] == 1
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in rendered.worker["resources"]["requests"]  # utilisation is of the request
    # a pod removed ends its sessions: scale down only after minutes of lower load
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert "replicas" not in rendered.deployment["spec"]  # a re-apply must not undo the HPA


@pytest.mark.usefixtures("clean_env")
def test_only_jetstream_mode_scales_out(rendered: Rendered) -> None:
    """Core mode transcribes every session on every replica: a target that may run more than one
    pod must run STT_MODE=jetstream (and core mode is the default when the ConfigMap is silent)."""
    spec = rendered.one("HorizontalPodAutoscaler")["spec"]
    mode = load_settings(stt_mode=rendered.config.get("STT_MODE", "core")).stt_mode
    if spec["maxReplicas"] > 1 or spec.get("minReplicas", 1) > 1:
        assert mode == "jetstream", f"{rendered.target} scales to {spec['maxReplicas']} in {mode}"
    if rendered.target == SCALE_OUT:
        assert rendered.config["STT_MODE"] == "jetstream"
        # two at least, so a lost pod fails over to a running one
        assert 2 <= spec["minReplicas"] <= spec["maxReplicas"]
        # each partition is served by one replica: more pods than partitions would sit idle
        assert spec["maxReplicas"] <= int(rendered.config["STT_JS_PARTITIONS"])
    else:
        assert mode == "core"


@pytest.mark.usefixtures("clean_env")
def test_the_jetstream_overlay_sets_every_scale_out_setting() -> None:
    """Set explicitly (with their sizing explained in config.env), not left to defaults, and
    valid: the overlay's values load, and the lease expires well within the drain."""
    config = Rendered(SCALE_OUT).config
    js = {n for n in SETTING_NAMES if n.startswith("STT_JS_")}
    assert js and js <= set(config), f"unset: {js - set(config)}"
    settings = load_settings(**{k.lower(): v for k, v in config.items() if k in js | {"STT_MODE"}})
    assert settings.stt_mode == "jetstream"
    assert settings.stt_js_lease_seconds < float(config["STT_DRAIN_TIMEOUT"])


def test_the_budget_and_the_service_select_the_pods(rendered: Rendered) -> None:
    labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": rendered.deployment["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": rendered.one("PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
        "Service": rendered.one("Service")["spec"]["selector"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= labels.items(), kind
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1
    sa = rendered.one("ServiceAccount")["metadata"]["name"]
    assert rendered.pod["serviceAccountName"] == sa


# --- the overlays --------------------------------------------------------------------------------
def test_the_gpu_overlay_asks_for_and_tolerates_a_gpu() -> None:
    gpu = Rendered("overlays/gpu")
    resources = gpu.worker["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert int(resources["requests"].get("nvidia.com/gpu", 1)) == 1
    assert any(
        t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" and t["effect"] == "NoSchedule"
        for t in gpu.pod["tolerations"]
    )
    assert gpu.pod["nodeSelector"]
    assert gpu.worker["startupProbe"]["httpGet"]["path"] == "/readyz"  # the model loads first
    startup = gpu.worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    # more memory than the slim image, and a writable cache for the model
    assert _bytes(resources["limits"]["memory"]) > _bytes(
        Rendered("base").worker["resources"]["limits"]["memory"]
    )
    writable = {m["mountPath"] for m in gpu.worker["volumeMounts"] if not m.get("readOnly")}
    for var in ("HF_HOME", "CUDA_CACHE_PATH"):
        assert any(Path(gpu.config[var]).is_relative_to(m) for m in writable - {"/tmp"}), var
    for other in ("base", "overlays/sagemaker", "overlays/whisper-http", SCALE_OUT):
        assert "nvidia.com/gpu" not in str(Rendered(other).worker["resources"])


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_the_sagemaker_service_account_assumes_an_iam_role() -> None:
    sa = Rendered("overlays/sagemaker").one("ServiceAccount")
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", arn), arn
    # the slim overlays without AWS carry no role
    for other in ("base", "overlays/whisper-http", "overlays/gpu", SCALE_OUT):
        annotations = Rendered(other).one("ServiceAccount")["metadata"].get("annotations", {})
        assert "eks.amazonaws.com/role-arn" not in annotations


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_set_by_the_overlays_images_entry(overlay: str, tmp_path: Path) -> None:
    """What `kustomize edit set image NAME=REGISTRY/IMAGE:TAG` in the overlay does, on a copy."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays" / overlay / "kustomization.yaml"
    spec = yaml.safe_load(kustomization.read_text())
    assert spec["images"], f"{overlay}: no images entry to set"
    shipped = {f"{i['newName']}:{i['newTag']}" for i in spec["images"]}
    assert {c["image"] for c in Rendered(f"overlays/{overlay}").containers} <= shipped
    for image in spec["images"]:
        image["newName"] = f"registry.test/team/{image['name']}"
        image["newTag"] = "9.9.9"
    kustomization.write_text(yaml.safe_dump(spec))
    wanted = {f"registry.test/team/{i['name']}:9.9.9" for i in spec["images"]}
    docs = render(copy / "overlays" / overlay)
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    images = {c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]}
    assert images and images <= wanted, f"{overlay}: {images} not all set by images:"
    expected = "stt-service-local" if overlay == "gpu" else "stt-service"
    assert images == {f"registry.test/team/{expected}:9.9.9"}
