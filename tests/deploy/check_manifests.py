"""Checks the Kubernetes manifests in deploy/k8s without a cluster: every file parses, every
resource the kustomization names exists, every reid container has gRPC probes on its gRPC port
and reads the API key from the secret, what the pods reference (ConfigMaps, PVCs) is defined,
the HPA scales the embedder, the ingester's shard count equals its replicas, and the identity
service asks Qdrant for the replication factor that the Qdrant values make possible."""

import pathlib
import sys

import yaml

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/k8s")
errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
docs = []
for name in kustomization["resources"]:
    path = root / name
    check(path.is_file(), f"kustomization names {name}, which does not exist")
    if path.is_file():
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]

by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

config_maps = set(by_kind.get("ConfigMap", {}))
claims = set(by_kind.get("PersistentVolumeClaim", {}))
workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
check(set(workloads) == {"embedder", "identity", "ingester", "trainer"}, f"workloads: {sorted(workloads)}")

for name, w in workloads.items():
    spec = w["spec"]["template"]["spec"]
    check(w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items(),
          f"{name}: selector does not match the pod labels")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    templates = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            check(v["persistentVolumeClaim"]["claimName"] in claims, f"{name}: unknown PVC {v}")
        if "configMap" in v:
            check(v["configMap"]["name"] in config_maps, f"{name}: unknown ConfigMap {v}")
    for c in spec["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        if c["name"] == "console":
            # The web console beside the identity service: HTTP, probed on /healthz, the key at /keys,
            # the identity volume read-only.
            for probe in ("readinessProbe", "livenessProbe"):
                check(c.get(probe, {}).get("httpGet", {}).get("port") == "http" and "http" in ports,
                      f"{name}: the console's {probe} must be an HTTP probe on its http port")
            check(mounts.get("keys") == "/keys", f"{name}: the console needs the key secret at /keys")
            data = [m for m in c.get("volumeMounts", []) if m["name"] == "data"]
            check(all(m.get("readOnly") for m in data), f"{name}: the console mounts the identity volume read-only")
            continue
        check("grpc" in ports and "metrics" in ports, f"{name}: grpc and metrics ports")
        for probe in ("readinessProbe", "livenessProbe"):
            check(c.get(probe, {}).get("grpc", {}).get("port") == ports.get("grpc"),
                  f"{name}: {probe} must be a gRPC probe on the gRPC port")
        env = {e["name"]: e for e in c.get("env", [])}
        for ref in c.get("envFrom", []):
            check(ref["configMapRef"]["name"] in config_maps, f"{name}: unknown ConfigMap {ref}")
        listen = [e for e in env if e.endswith("_LISTEN") and not e.endswith("METRICS_LISTEN")]
        check(len(listen) == 1 and env[listen[0]]["value"].endswith(f":{ports.get('grpc')}"),
              f"{name}: listens on its gRPC port")
        check(mounts.get("keys") == "/keys" and volumes.get("keys", {}).get("secret", {}).get("secretName") == "reid-keys",
              f"{name}: the API key secret at /keys")
        for m in mounts:
            check(m in volumes or m in templates, f"{name}: mount {m} has no volume")

shared_env = by_kind["ConfigMap"]["reid-env"]["data"]
check(shared_env.get("REID_API_KEY_FILE") == "/keys/api-key", "reid-env must point REID_API_KEY_FILE at the secret")

hpa = by_kind["HorizontalPodAutoscaler"]["embedder"]["spec"]
check(hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "embedder"}, "HPA target")
check(hpa["minReplicas"] >= 2, "at least two embedders")
check(by_kind["Service"]["embedder"]["spec"].get("clusterIP") == "None",
      "the embedder Service must be headless for client-side balancing")


def env_of(name):
    c = workloads[name]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in c["env"]}


for client in ("identity", "ingester"):
    url = env_of(client)[f"REID_{client.upper()}_EMBEDDER"]
    check(url.startswith("dns:///embedder."), f"{client} must balance over the embedders: {url}")
ingester = workloads["ingester"]
check(int(env_of("ingester")["REID_INGESTER_SHARD_COUNT"]) == ingester["spec"]["replicas"],
      "the ingester's shard count must equal its replicas")
values = yaml.safe_load((root / "qdrant-values.yaml").read_text())
factor = int(env_of("identity")["REID_QDRANT_REPLICATION_FACTOR"])
check(values["replicaCount"] == 3 and factor == 2 and values["config"]["cluster"]["enabled"],
      "Qdrant: three nodes, replication factor 2")
check(values.get("apiKey") is False, "the Qdrant key is set at install, not committed")

if errors:
    print("\n".join(f"deploy/k8s: {e}" for e in errors))
    sys.exit(1)
print(f"deploy/k8s: {len(docs)} resources checked")
