# Fuzzing and the hostile corpus at full size. `make test` runs both at CI size (tests/fuzz,
# tests/hostile); these targets raise the example counts and print the totals.
#   make fuzz                      # FUZZ_EXAMPLES=1000 per fuzz target; totals at the end, JSON in var/fuzz.json
#   make fuzz FUZZ_EXAMPLES=200    # a shorter run
#   make hostile                   # the hostile corpus table; JSON in var/hostile.json
FUZZ_EXAMPLES ?= 1000

.PHONY: fuzz hostile

fuzz: $(VENV)/.installed ## Schemathesis (OpenAPI, stateful), multipart and gRPC fuzzers with FUZZ_EXAMPLES each; prints requests and server errors
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q -p no:cacheprovider --timeout=7200

hostile: $(VENV)/.installed ## The hostile corpus (70+ malformed files) through REST on an embedded service; table + var/hostile.json
	$(PY) scripts/hostile_corpus.py --json var/hostile.json
