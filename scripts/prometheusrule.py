#!/usr/bin/env python3
"""Renders deploy/monitoring/rules.yaml (the Prometheus rules file promtool tests and a plain
Prometheus loads) as deploy/monitoring/prometheusrule.yaml, the Prometheus Operator's PrometheusRule
that the kustomize component ships. rules.yaml is the one source: kustomize cannot wrap a file's
content in a resource, so the PrometheusRule is rendered here and committed.

Usage: scripts/prometheusrule.py          write prometheusrule.yaml
       scripts/prometheusrule.py --check  fail if the committed file differs from rules.yaml's rendering
"""

import os
import sys

import yaml

MONITORING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "monitoring")
HEADER = """\
# Rendered from rules.yaml by scripts/prometheusrule.py: edit rules.yaml, then run the script.
"""


class Dumper(yaml.SafeDumper):
    """Multi-line expressions as block literals, as rules.yaml writes them."""


Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def render(rules):
    """The PrometheusRule of a rules file's groups.

    >>> print(render({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "up"}]}]}), end="")
    # Rendered from rules.yaml by scripts/prometheusrule.py: edit rules.yaml, then run the script.
    apiVersion: monitoring.coreos.com/v1
    kind: PrometheusRule
    metadata:
      name: connect-facade
      labels:
        app.kubernetes.io/name: connect-facade
    spec:
      groups:
      - name: g
        rules:
        - record: r
          expr: up
    """
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "connect-facade", "labels": {"app.kubernetes.io/name": "connect-facade"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(resource, Dumper=Dumper, sort_keys=False, width=120)


def main():
    with open(os.path.join(MONITORING, "rules.yaml")) as f:
        rendered = render(yaml.safe_load(f))
    target = os.path.join(MONITORING, "prometheusrule.yaml")
    if "--check" in sys.argv[1:]:
        with open(target) as f:
            if f.read() != rendered:
                sys.exit(f"{target} differs from rules.yaml: run scripts/prometheusrule.py")
        print(f"ok   {os.path.relpath(target)} matches rules.yaml")
        return
    with open(target, "w") as f:
        f.write(rendered)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
