# Alert rules and dashboard checks (deploy/k8s/components/monitoring): `make observability-check`, run by `make test`.
# promtool comes from Debian's `prometheus` package (in APT_PACKAGES); installed here if missing.
PROMTOOL      ?= /usr/bin/promtool
MONITORING    := deploy/k8s/components/monitoring

TEST_CHECKS += observability-check

.PHONY: observability-check

$(PROMTOOL):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

observability-check: $(PROMTOOL) ## promtool check/test the alert rules; every metric in rules and dashboard is registered
	$(PROMTOOL) check rules $(MONITORING)/alerts.yaml
	cd $(MONITORING) && $(PROMTOOL) test rules alerts.test.yaml
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_observability_assets.py
