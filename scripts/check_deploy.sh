#!/usr/bin/env bash
# Validates deploy/ with real tools: kustomize renders the base and the example overlay (with the
# monitoring component), kubernetes-validate checks the output against the Kubernetes schemas, the
# monitoring resources are checked (the PrometheusRule's rules by promtool, the ServiceMonitor against
# the Service, the dashboard ConfigMap against dashboard.json), checkov applies its security
# policy (a skipped check must carry its reason in a checkov.io/skip annotation), hadolint lints the
# Dockerfile, every flag and CONNECT_FACADE_* variable deploy/ names must exist in `serve --help`,
# each rendering's configuration files (with the files they name) pass `connect-facade config
# check`, and the example's preflight init container runs `connect-facade check` with the facade's
# own flags, environment and files.
# Usage: scripts/check_deploy.sh [path/to/connect-facade]
#   (kubectl, kubernetes-validate, checkov, hadolint and promtool must be on PATH; .ci/run installs them)
set -euo pipefail
binary=${1:-target/debug/connect-facade}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

echo "-- kustomize"
kubectl kustomize deploy/k8s/base >"$out/base.yaml"
kubectl kustomize deploy/k8s/overlays/example >"$out/example.yaml"
grep -q "role/connect-facade-example" "$out/example.yaml" || fail "the overlay does not set the role ARN"
python3 - "$out/example.yaml" <<'PY' || fail "the overlay does not share the quota through Redis"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
store = next(e for e in container.get("env", []) if e["name"] == "CONNECT_FACADE_QUOTA_STORE")
assert store["valueFrom"]["secretKeyRef"] == {"name": "connect-facade-redis", "key": "url"}, store
assert any(d["kind"] == "NetworkPolicy" and any(p["port"] == 6379 for r in d["spec"].get("egress", []) for p in r.get("ports", [])) for d in docs), "no egress to Redis"
PY
python3 - "$out/example.yaml" <<'PY' || fail "the overlay's routes are not a ConfigMap mounted read-only without a hash suffix"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
routes = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "connect-facade-routes")
spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "routes")
volume = next(v for v in spec["volumes"] if v["name"] == "routes")
assert volume["configMap"]["name"] == "connect-facade-routes"
assert "routes.yaml" in routes["data"] and mount.get("readOnly")
PY
python3 - "$out/example.yaml" <<'PY' || fail "the overlay's preflight init container does not run check with the facade's own flags, environment and files"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
facade, [preflight] = spec["containers"][0], spec["initContainers"]
assert preflight["command"] == ["/usr/local/bin/connect-facade", "check"], preflight["command"]
assert facade["image"].startswith("111122223333.dkr.ecr.eu-west-2.amazonaws.com/connect-facade:"), facade["image"]
for field in ("args", "env", "volumeMounts", "image"):
    assert preflight[field] == facade[field], (field, preflight[field], facade[field])
PY

kubectl kustomize deploy/k8s/examples/caller >"$out/caller.yaml"
python3 - "$out/example.yaml" "$out/caller.yaml" <<'PY' || fail "the example caller's projected token is not the one the facade's callers file names"
import sys, yaml
facade = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
caller = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
callers = yaml.safe_load(next(d for d in facade if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "connect-facade-callers")["data"]["callers.yaml"])
deployment = next(d for d in caller if d["kind"] == "Deployment")
spec = deployment["spec"]["template"]["spec"]
account = f"system:serviceaccount:{deployment['metadata']['namespace']}:{spec['serviceAccountName']}"
[token] = [s["serviceAccountToken"] for v in spec["volumes"] if "projected" in v for s in v["projected"]["sources"] if "serviceAccountToken" in s]
rule = next(c["jwt"] for c in callers["callers"] if "jwt" in c)
assert rule["subject"] == account, (rule["subject"], account)
assert rule["audience"] == token["audience"], (rule["audience"], token)
assert any(i["issuer"] == rule["issuer"] for i in callers["issuers"])
env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "connect-facade-token")
assert env["CONNECT_FACADE_TOKEN_FILE"] == f"{mount['mountPath']}/{token['path']}", env
# The facade fetches the cluster's keys with its own token and the cluster's CA, mounted where the callers file says.
fspec = next(d for d in facade if d["kind"] == "Deployment")["spec"]["template"]["spec"]
mounts = {m["mountPath"] for m in fspec["containers"][0]["volumeMounts"]}
for issuer in callers["issuers"]:
    for key in ("ca_file", "token_file"):
        assert issuer[key].rsplit("/", 1)[0] in mounts, (key, issuer[key], mounts)
PY
echo "ok   the example caller's projected token (audience, service account) is what the facade's callers file names"

echo "-- the configuration each rendering gives the pods (connect-facade config print and check)"
# Writes a rendering's ConfigMap volumes under a root directory at their mount paths, and prints the
# container's --config arguments read from there.
pod_files() {
  python3 - "$1" "$2" <<'PY'
import os, subprocess, sys, tempfile, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
root = sys.argv[2]
spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
container = spec["containers"][0]
maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
volumes = {v["name"]: v for v in spec.get("volumes", [])}
def projected(volume):
    """A projected volume's files as the kubelet writes them: a service account token (a stand-in) and
    the cluster's CA (a certificate made here, as kube-root-ca.crt holds one)."""
    files = {}
    for source in volume["projected"]["sources"]:
        if "serviceAccountToken" in source:
            files[source["serviceAccountToken"]["path"]] = "stand-in.service-account.token\n"
        for item in source.get("configMap", {}).get("items", []):
            assert source["configMap"]["name"] == "kube-root-ca.crt", source
            with tempfile.TemporaryDirectory() as scratch:
                subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                "-nodes", "-subj", "/CN=kubernetes", "-days", "1", "-keyout", f"{scratch}/key",
                                "-out", f"{scratch}/ca.crt"], check=True, capture_output=True)
                files[item["path"]] = open(f"{scratch}/ca.crt").read()
    return files
for mount in container.get("volumeMounts", []):
    volume = volumes[mount["name"]]
    data = projected(volume) if "projected" in volume else maps[volume["configMap"]["name"]]["data"]
    os.makedirs(root + mount["mountPath"], exist_ok=True)
    for key, text in data.items():
        # A file naming a projected one (the callers file's ca_file, token_file) names it under the root.
        for other in container.get("volumeMounts", []):
            if "projected" in volumes[other["name"]]:
                text = text.replace(": " + other["mountPath"] + "/", ": " + root + other["mountPath"] + "/")
        with open(f"{root}{mount['mountPath']}/{key}", "w") as f:
            f.write(text)
assert container["command"] == ["/usr/local/bin/connect-facade", "serve"], container["command"]
args = container["args"]
for arg in args:
    assert arg.startswith("--config="), f"{arg}: the pods' settings belong in their configuration files"
    print("--config=" + root + arg.split("=", 1)[1])
PY
}
# The files a configuration names, as flags pointing under the root (the paths are the pod's).
named_files() {
  python3 - "$1" "$2" <<'PY'
import sys, yaml
for section in yaml.safe_load(open(sys.argv[1])).values():
    for key, value in (section or {}).items():
        if key in ("routes", "auth-file", "tls-cert", "tls-key", "tls-client-ca", "simulator-fixtures"):
            print(f"--{key}={sys.argv[2]}{value}")
PY
}
for rendered in base example; do
  root="$out/$rendered-root"
  mapfile -t configs < <(pod_files "$out/$rendered.yaml" "$root")
  env -i "$binary" config print "${configs[@]}" >"$out/$rendered.effective.yaml" \
    || fail "$rendered: the pods' configuration files are refused"
  mapfile -t files < <(named_files "$out/$rendered.effective.yaml" "$root")
  env -i "$binary" config check "${configs[@]}" "${files[@]}" >/dev/null \
    || fail "$rendered: connect-facade config check refuses the pods' configuration"
  echo "ok   $rendered: ${#configs[@]} configuration file(s) and ${#files[@]} file(s) they name pass config check"
done
effective() { grep -E "^  $2: " "$out/$1.effective.yaml" | sed "s/^  $2: //"; }
[ "$(effective base rate-limit)" = 1 ] || fail "the base divides the quota by its 2 replicas (rate-limit 1)"
[ "$(effective example rate-limit)" = 2 ] || fail "a shared bucket gets the whole account's rate"
[ "$(effective example region)" = eu-west-2 ] || fail "the overlay's file does not set its region"
[ "$(effective example routes)" = /etc/connect-facade/routes/routes.yaml ] || fail "the overlay's routes are not where its file says"
echo "ok   effective settings: the base's rate 1/s, the overlay's 2/s (shared), its region and routes"
echo "-- monitoring component"
python3 scripts/prometheusrule.py --check
python3 - "$out/example.yaml" "$out" <<'PY' || fail "the monitoring component does not render as expected"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by_kind = lambda kind: [d for d in docs if d["kind"] == kind]
[rule], [monitor] = by_kind("PrometheusRule"), by_kind("ServiceMonitor")
service = next(d for d in by_kind("Service") if d["metadata"]["name"] == "connect-facade")
# The ServiceMonitor finds the Service, in its namespace, by a port the Service has.
assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == rule["metadata"]["namespace"]
assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(), "selector"
ports = {p["name"] for p in service["spec"]["ports"]}
assert all(e["port"] in ports for e in monitor["spec"]["endpoints"]), (monitor["spec"]["endpoints"], ports)
# rules.yaml's job is the ServiceMonitor's: the Service's name.
assert 'job="connect-facade"' in open("deploy/monitoring/rules.yaml").read() and service["metadata"]["name"] == "connect-facade"
# The overlay points every runbook link at its own copy; nothing else in the rules changed.
source = yaml.safe_load(open("deploy/monitoring/rules.yaml"))["groups"]
base = next(d for d in yaml.safe_load_all(open("deploy/k8s/overlays/example/monitoring.yaml")))["data"]["runbookBaseUrl"]
links = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
assert links and all(link.startswith(base + "#") for link in links), links
for group in source:
    for r in group["rules"]:
        if "alert" in r:
            r["annotations"]["runbook_url"] = base + "#" + r["annotations"]["runbook_url"].split("#", 1)[1]
assert rule["spec"]["groups"] == source, "the PrometheusRule's rules differ from rules.yaml"
with open(f"{sys.argv[2]}/rendered-rules.yaml", "w") as f:
    yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
# The dashboard ConfigMap, labelled for Grafana's sidecar, holds dashboard.json unchanged.
dashboard = next(d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "connect-facade-dashboard")
assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
assert json.loads(dashboard["data"]["dashboard.json"]) == json.load(open("deploy/monitoring/dashboard.json"))
assert not any(d["metadata"]["name"] == "connect-facade-monitoring" for d in docs), "local-config was emitted"
PY
promtool check rules "$out/rendered-rules.yaml" >/dev/null || fail "promtool refuses the rendered PrometheusRule's rules"
echo "ok   PrometheusRule (promtool), ServiceMonitor, dashboard ConfigMap; runbook links point at the overlay's base"

for policy in deploy/iam-policy.json deploy/iam-policy-reconcile.json deploy/iam-assume-role-policy.json deploy/iam-trust-policy.json; do
  python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$policy" || fail "$policy is not JSON"
done
echo "ok   base and overlay render; the overlay shares the quota through Redis and mounts its routes"

echo "-- kubernetes-validate"
for rendered in base example caller; do
  kubernetes-validate --strict --quiet --kubernetes-version 1.32.0 "$out/$rendered.yaml"
  echo "ok   $rendered is valid Kubernetes 1.32"
done

echo "-- checkov"
checkov --quiet --compact --skip-download --framework kubernetes -f "$out/example.yaml"
checkov --quiet --compact --skip-download --framework kubernetes -f "$out/caller.yaml"
checkov --quiet --compact --skip-download --framework dockerfile -f deploy/Dockerfile
python3 - "$out/example.yaml" "$out/caller.yaml" <<'PY'
import sys, yaml
for doc in (d for path in sys.argv[1:] for d in yaml.safe_load_all(open(path)) if d):
    for key, value in (doc.get("metadata", {}).get("annotations") or {}).items():
        if key.startswith("checkov.io/skip") and "=" not in value:
            sys.exit(f"{doc['kind']}: {key} skips a check without a reason")
PY
echo "ok   no failed checks; every skip has a reason"

echo "-- hadolint"
hadolint deploy/Dockerfile
grep -q "cargo build --profile dist --locked" deploy/Dockerfile || fail "the Dockerfile must build with cargo build --profile dist --locked"
echo "ok   Dockerfile"

echo "-- flags named in deploy/ exist"
help=$("$binary" serve --help)
# deploy/k8s/examples is a caller's (its variables are the examples' own, not the facade's).
for name in $(grep -rhoE 'CONNECT_FACADE_[A-Z_]+' deploy --exclude-dir=examples | sort -u); do
  grep -q "env: $name=" <<<"$help" || fail "$name is not a serve flag's variable"
done
for flag in $(grep -rhoE -- '"--[a-z-]+' deploy/k8s | tr -d '"' | sort -u); do
  grep -q -- "$flag " <<<"$help" || fail "$flag is not a serve flag"
done
echo "ok   every CONNECT_FACADE_* variable and flag exists"
echo "deploy checks: all passed"
