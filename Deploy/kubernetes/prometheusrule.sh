#!/usr/bin/env bash
# Prints the alert rules of Deploy/prometheus/cacheroute-rules.yml as a Prometheus Operator
# PrometheusRule (one source for both):
#   Deploy/kubernetes/prometheusrule.sh | kubectl apply -n inference -f -
set -euo pipefail
rules="$(dirname "$0")/../prometheus/cacheroute-rules.yml"
cat <<'HEADER'
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: cacheroute
  labels:
    app.kubernetes.io/name: cacheroute
spec:
HEADER
grep -v '^[[:space:]]*#' "$rules" | sed 's/^./  &/'
