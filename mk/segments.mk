# Long jobs in segments across workers: `make bench-segments` (scripts/bench_segments.py).
.PHONY: bench-segments

bench-segments: $(VENV)/.installed ## One 20-min job: 1 vs 2 workers (yolo, sample_fps=1) and 4 workers on a simulated 2-s stage; JSON in var/bench-segments.json
	$(PY) scripts/bench_segments.py
