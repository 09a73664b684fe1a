# weakalign: `make demo` (set up + align + train + score on AN4) and `make test`.
CORPUS ?= an4
CONFIG ?= aux_ls0.5_l3
NJ ?= 2
# Local DDP ranks of the hybrid BLSTM's training (weakalign hybrid --procs): on 2 CPU cores 2 ranks of 1 thread each.
HYBRID_PROCS ?= 2
# A Dask scheduler's address (tcp://HOST:8786) or slurm|pbs|sge for the jobs of align and score; empty: a local cluster of NJ processes.
CLUSTER ?=
SEED ?=
FROM ?=
STOP_AFTER ?=
ALIGN_CONFIG ?=
# DRY_RUN=1: align runs nothing, says per stage whether it is done or would run, and why.
DRY_RUN ?=
DATA ?= data
EXP ?= exp
PYTHON ?= python3
# make test's processes (0: this one); --dist loadfile keeps a file's tests and module fixtures on one of them.
TEST_JOBS ?= 2

VENV := .venv
WA := $(VENV)/bin/weakalign
ROOTS := --data-root $(DATA) --exp-root $(EXP)

.PHONY: setup tools align train score demo results test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

align: setup
	$(WA) align $(CORPUS) $(ROOTS) --nj $(NJ) --hybrid-procs $(HYBRID_PROCS) $(if $(CLUSTER),--cluster $(CLUSTER)) $(if $(FROM),--from $(FROM)) $(if $(STOP_AFTER),--stop-after $(STOP_AFTER)) $(if $(ALIGN_CONFIG),--config $(ALIGN_CONFIG)) $(if $(DRY_RUN),--dry-run)

train: setup
	$(WA) train $(CORPUS) $(ROOTS) --nj $(NJ) --config $(CONFIG) $(if $(SEED),--seed $(SEED))

score: setup
	$(WA) score $(CORPUS) $(ROOTS) --nj $(NJ) $(if $(CLUSTER),--cluster $(CLUSTER)) --config $(CONFIG) $(if $(SEED),--seed $(SEED))

# The whole job on AN4: alignments, two E2E systems (no aux loss / the paper's smoothed triphone CE),
# their scores on dev and test, and the comparison table with CIs and a paired p-value.
# The two E2E systems train side by side at 1 thread each (on 2 cores this halves their wall time
# compared with one after the other at 2 threads).
demo: setup
	$(MAKE) align CORPUS=an4
	$(MAKE) -j2 demo-system-baseline demo-system-aux_ls0.5_l3
	$(WA) compare baseline aux_ls0.5_l3 --corpus an4 --exp-root $(EXP) --set test

demo-system-%: setup
	$(WA) train an4 $(ROOTS) --config $* --nj 1
	$(WA) score an4 $(ROOTS) --config $* --nj 1

# The CORPUS sections of RESULTS.md from the published runs in results/$(CORPUS)/ (weakalign publish), no exp/:
# those results/$(CORPUS)/tables.yaml lists (one per alignment set), else every run there, grouped by seed (config = run name without _seed<n>): n, dev/test WER mean ± std,
# and the paired p-values (bootstrap; sign-flip pooled over seed pairs) vs the baseline group.
# Runs trained on different alignments / stopping rules are refused: ALLOW_MIXED=1 tabulates them anyway.
results: setup
	$(WA) results-table $(CORPUS) --from-results --results-root results --group --baseline baseline $(if $(ALLOW_MIXED),--allow-mixed) --out RESULTS.md

test: setup tools
	$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=20 tests

# Debian's sox: the Kaldi data dirs' wav.scp pipes (export-kaldi) and their test. Installed with apt-get
# when missing and we are root (a fresh machine, CI); otherwise say how.
tools:
	@command -v sox >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq sox >/dev/null; } \
	  || { echo "sox is needed (Kaldi wav.scp pipes): apt-get install sox" >&2; exit 1; }

# exp/bench/*.json; time_to_accuracy.json also reads the published runs of results/ when it exists.
bench: setup
	$(WA) bench $(CORPUS) $(ROOTS) --nj $(NJ) $(if $(wildcard results),--results-root results)

clean:
	rm -rf $(DATA) $(EXP)
