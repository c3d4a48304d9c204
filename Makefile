# m10jobs — see README.md.  Every target installs what it needs.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PYTEST_ARGS ?=

# make install: package into a venv at PREFIX, units, example config (DESTDIR honoured).
# The venv is built from the distribution's Python, never a user-local one (pyenv):
# the service user must be able to execute it.
INSTALL_PYTHON   ?= $(firstword $(wildcard /usr/bin/python3) python3)
PREFIX           ?= /opt/m10jobs
BINDIR           ?= /usr/local/bin
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
SYSUSERS_DIR     ?= /usr/lib/sysusers.d
CONFDIR          ?= /etc/m10jobs
# node_exporter's textfile directory: the units set M10_METRICS_DIR to it and let the jobs
# write there only (METRICS_DIR= on the command line for another one)
METRICS_DIR      ?= /var/lib/prometheus/node-exporter
SERVICE_USER     := m10jobs
DOCDIR           := $(PREFIX)/share/doc/m10jobs
STAGE            := $(DESTDIR)$(PREFIX)
UNITS            := $(notdir $(wildcard systemd/*.service systemd/*.timer systemd/*.target))
TIMERS           := $(filter %.timer,$(UNITS))
# systemctl only for a real install on a running systemd, never into a DESTDIR stage
LIVE_SYSTEMD     := $(if $(DESTDIR),,$(wildcard /run/systemd/system))

.PHONY: all venv deps test test-loaded demo bench bench-scale lint clean install uninstall units-check schema dist migrate-hint

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

deps: venv
	scripts/dev/install-deps.sh $(BIN)/pip

test: deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The suite (the system tier aside) while a CPU hog spins on every core at nice 0,
# as on a busy CI machine: timings must not decide a result.  Not part of CI (it
# takes about as long again as `make test`); PYTEST_ARGS may narrow it to some files.
test-loaded: deps lint
	@pids=; for i in $$(seq $$(nproc)); do nice -n 0 yes >/dev/null & pids="$$pids $$!"; done; \
	trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	echo "test-loaded: $$(nproc) CPU hogs (pids$$pids)"; \
	$(BIN)/pytest -m "not system" $(PYTEST_ARGS); rc=$$?; \
	kill $$pids; wait $$pids 2>/dev/null; exit $$rc

demo: deps
	$(BIN)/python -m devenv.demo $(DEMO_ARGS)

bench: deps
	$(BIN)/python -m benchmarks.run $(BENCH)

# every recurring query and pass at 100k, 2M and 10M rows (minutes; not part of bench)
bench-scale: deps
	$(BIN)/python -m benchmarks.scale

# sql/schema.sql: rewritten from a throwaway database migrated from zero
schema: deps
	M10_UPDATE_SCHEMA=1 $(BIN)/pytest -q tests/integration/test_schema.py -k from_zero

# the gates: lint, formatting and types fail the build (make test runs them first)
lint: venv
	$(BIN)/ruff check m10jobs devenv tests benchmarks
	$(BIN)/ruff format --check m10jobs devenv tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dist

# the release's wheel and sdist in dist/ (hatchling from the dev venv: no network needed);
# the version is m10jobs/__init__.py's, CHANGELOG.md says what changed
dist: venv
	rm -rf dist
	$(BIN)/python -m hatchling build -d dist
	@ls dist

install:
	$(INSTALL_PYTHON) -m venv --clear $(STAGE)
	$(STAGE)/bin/pip install -q --no-warn-script-location .
ifneq ($(DESTDIR),)
	# staged: scripts must point at PREFIX, where the tree will finally live
	grep -rlI -- '$(STAGE)' $(STAGE)/bin | xargs -r sed -i 's|$(STAGE)|$(PREFIX)|g'
endif
	$(STAGE)/bin/python -m m10jobs.cli.admin units render --prefix $(PREFIX) \
		--output $(DESTDIR)$(SYSTEMD_UNIT_DIR) --metrics-dir $(METRICS_DIR)
	install -D -m 0644 systemd/m10jobs.sysusers.conf $(DESTDIR)$(SYSUSERS_DIR)/m10jobs.conf
	# the service user must exist before its configuration can be given to it
	$(if $(LIVE_SYSTEMD),systemd-sysusers $(SYSUSERS_DIR)/m10jobs.conf)
	install -d -m 0755 $(DESTDIR)$(CONFDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(BINDIR)
	[ -e $(DESTDIR)$(CONFDIR)/m10jobs.toml ] || \
		install -m 0640 systemd/m10jobs.toml.example $(DESTDIR)$(CONFDIR)/m10jobs.toml
	[ -e $(DESTDIR)$(CONFDIR)/env ] || (umask 027 && \
		sed 's|^# M10_METRICS_DIR=.*|M10_METRICS_DIR=$(METRICS_DIR)|' systemd/env.example \
		> $(DESTDIR)$(CONFDIR)/env)
	# readable by root and the service user only (also mends an earlier install's modes)
	chmod 0640 $(DESTDIR)$(CONFDIR)/m10jobs.toml $(DESTDIR)$(CONFDIR)/env
	if getent group $(SERVICE_USER) >/dev/null; then \
		chgrp $(SERVICE_USER) $(DESTDIR)$(CONFDIR)/m10jobs.toml $(DESTDIR)$(CONFDIR)/env; fi
	# the jobs (group m10jobs) write their .prom files there; node_exporter reads them
	install -d -m 0755 $(DESTDIR)$(METRICS_DIR)
	if getent group $(SERVICE_USER) >/dev/null; then \
		chgrp $(SERVICE_USER) $(DESTDIR)$(METRICS_DIR) && chmod g+rwx $(DESTDIR)$(METRICS_DIR); fi
	ln -sfn $(PREFIX)/bin/m10 $(DESTDIR)$(BINDIR)/m10
	# the operator wrappers, beside the job scripts they run (the runbook names this path)
	install -m 0755 scripts/ops/*.sh $(STAGE)/bin/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 monitoring/*.yml monitoring/*.json $(DESTDIR)$(DOCDIR)/
	$(if $(LIVE_SYSTEMD),systemctl daemon-reload)
	@$(STAGE)/bin/python -m m10jobs.cli.admin --version
	$(if $(DESTDIR),@echo "then run \`m10 db migrate\` once if this release needs a newer schema (\`m10 db status\` says)",@$(MAKE) --no-print-directory migrate-hint)

# After an install: is `m10 db migrate` due?  Asks the database when the configuration
# reaches it (`m10 db status`); never fails the install.
migrate-hint:
	@out=$$($(BINDIR)/m10 db status 2>&1); code=$$?; \
	if [ $$code -eq 0 ] && echo "$$out" | grep -q '^pending       none'; then \
		echo "database schema: nothing to migrate for this release"; \
	elif [ $$code -eq 0 ] || echo "$$out" | grep -q 'run `m10 db migrate`'; then \
		echo "database schema: run \`m10 db migrate\` once (from this host) - pending migrations:"; \
		echo "$$out" | grep -E '^(schema|pending|verdict) ' | sed 's/^/  /'; \
	elif echo "$$out" | grep -q '^verdict'; then \
		echo "database schema: this release does not fit it:"; echo "$$out" | grep '^verdict' | sed 's/^/  /'; \
	else \
		echo "database schema: not checked (database not reachable with /etc/m10jobs/env); run \`m10 db status\` and, if due, \`m10 db migrate\`"; \
	fi; true

# Stops and disables before removing, so no timer is left scheduled or failing.
# Kept: $(CONFDIR) (configuration, secrets), the $(SERVICE_USER) user and the data
# systemd created for it (/var/lib/m10jobs: fallback files not yet uploaded; /var/log/m10).
uninstall:
	$(if $(LIVE_SYSTEMD),-systemctl disable --now $(TIMERS) m10jobs.target)
	$(if $(LIVE_SYSTEMD),-systemctl stop 'm10-*.service' 'aos-*.service')
	rm -f $(addprefix $(DESTDIR)$(SYSTEMD_UNIT_DIR)/,$(UNITS))
	rm -rf $(STAGE) $(DESTDIR)$(SYSUSERS_DIR)/m10jobs.conf
	[ ! -L $(DESTDIR)$(BINDIR)/m10 ] || rm -f $(DESTDIR)$(BINDIR)/m10
	$(if $(LIVE_SYSTEMD),systemctl daemon-reload)
	$(if $(LIVE_SYSTEMD),-systemctl reset-failed 'm10-*' 'aos-*')
	@echo "kept $(DESTDIR)$(CONFDIR) (configuration and secrets), the $(SERVICE_USER) user and its data in /var/lib/m10jobs and /var/log/m10: remove them by hand if unwanted"

# What CI checks about the install: units and config example/reference current, a staged
# install verifies clean.
units-check: venv
	$(BIN)/m10 units render --check
	$(BIN)/m10 config render --check
	scripts/dev/check-install.sh
