"""Checks the Prometheus Operator objects of rendered manifests, which the Kubernetes
OpenAPI schemas do not cover: each PodMonitor has the fields the operator requires and
selects the Pods of a Deployment or DaemonSet that has the named port; the PrometheusRule's
groups equal dashboards/alerts.yml's, and promtool accepts them.

Usage: check_manifests.py RENDERED.yaml ALERTS.yml
"""

import subprocess
import sys
import tempfile

import yaml


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def main(rendered, alerts_path):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if len(monitors) != 2 or len(rules) != 1:
        fail(f"want 2 PodMonitors and 1 PrometheusRule, found {len(monitors)} and {len(rules)}")
    for m in monitors:
        name = m["metadata"]["name"]
        if m["apiVersion"] != "monitoring.coreos.com/v1":
            fail(f"PodMonitor {name}: apiVersion {m['apiVersion']}")
        spec = m["spec"]
        unknown = set(spec) - {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector"}
        if unknown:
            fail(f"PodMonitor {name}: unknown fields {unknown}")
        want = spec["selector"]["matchLabels"]
        ports = [e["port"] for e in spec["podMetricsEndpoints"]]
        matched = [
            w for w in workloads
            if w["metadata"]["namespace"] == m["metadata"]["namespace"]
            and all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in want.items())
        ]
        if len(matched) != 1:
            fail(f"PodMonitor {name} selects {len(matched)} workloads")
        pod = matched[0]["spec"]["template"]
        have = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        if not set(ports) <= have:
            fail(f"PodMonitor {name}: ports {ports} not among {have}")
        if spec.get("jobLabel") not in pod["metadata"]["labels"]:
            fail(f"PodMonitor {name}: jobLabel {spec.get('jobLabel')} is not a Pod label")
        job = pod["metadata"]["labels"][spec["jobLabel"]]
        if job not in ("logarithmd", "antilog"):
            fail(f"PodMonitor {name}: job would be {job}, the alert rules expect logarithmd/antilog")
        for e in spec["podMetricsEndpoints"]:
            targets = {r.get("targetLabel") for r in e.get("relabelings", [])}
            if "node" not in targets:
                fail(f"PodMonitor {name}: no `node` label (the alert rules use it)")
    rule = rules[0]
    alerts = yaml.safe_load(open(alerts_path))
    if rule["spec"]["groups"] != alerts["groups"]:
        fail(f"PrometheusRule {rule['metadata']['name']} differs from {alerts_path}")
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
        f.flush()
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"promtool rejects the PrometheusRule:\n{r.stdout}{r.stderr}")
    print(f"{rendered}: {len(monitors)} PodMonitors and the PrometheusRule checked")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
