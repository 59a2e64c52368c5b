# Conveniences over scripts/ (the README's two commands work without make).
.PHONY: setup demo test bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
bench:
	bash scripts/setup.sh && . scripts/env.sh && python bench/bench_chunking.py && python bench/bench_sge_array.py && python bench/bench_s3_sync.py && python bench/bench_deploy.py && python bench/bench_nightly_scan.py && python bench/bench_load.py && python bench/bench_scale.py && python bench/bench_macros.py && python bench/bench_bioformats.py && python bench/bench_qc.py
