# m10jobs — see README.md.  Every target installs what it needs.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PYTEST_ARGS ?=

# make install: package into a venv at PREFIX, units, example config (DESTDIR honoured)
PREFIX           ?= /opt/m10jobs
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
SYSUSERS_DIR     ?= /usr/lib/sysusers.d
CONFDIR          ?= /etc/m10jobs
DOCDIR           := $(PREFIX)/share/doc/m10jobs
STAGE            := $(DESTDIR)$(PREFIX)

.PHONY: all venv deps test demo bench lint clean install uninstall units-check

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

deps: venv
	scripts/dev/install-deps.sh $(BIN)/pip

test: deps
	$(BIN)/ruff check m10jobs tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

demo: deps
	$(BIN)/python -m m10jobs.devenv.demo

bench: deps
	$(BIN)/python -m benchmarks.run $(BENCH)

lint: venv
	$(BIN)/ruff check m10jobs tests benchmarks
	$(BIN)/ruff format --check m10jobs tests benchmarks || true

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

install:
	$(PYTHON) -m venv --clear $(STAGE)
	$(STAGE)/bin/pip install -q --no-warn-script-location .
ifneq ($(DESTDIR),)
	# staged: scripts must point at PREFIX, where the tree will finally live
	grep -rlI -- '$(STAGE)' $(STAGE)/bin | xargs -r sed -i 's|$(STAGE)|$(PREFIX)|g'
endif
	$(STAGE)/bin/python -m m10jobs.cli.admin units render --prefix $(PREFIX) \
		--output $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	install -D -m 0644 systemd/m10jobs.sysusers.conf $(DESTDIR)$(SYSUSERS_DIR)/m10jobs.conf
	install -d -m 0755 $(DESTDIR)$(CONFDIR) $(DESTDIR)$(DOCDIR)
	[ -e $(DESTDIR)$(CONFDIR)/m10jobs.toml ] || \
		install -m 0640 systemd/m10jobs.toml.example $(DESTDIR)$(CONFDIR)/m10jobs.toml
	[ -e $(DESTDIR)$(CONFDIR)/env ] || install -m 0600 systemd/env.example $(DESTDIR)$(CONFDIR)/env
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 monitoring/*.yml $(DESTDIR)$(DOCDIR)/
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers && systemctl daemon-reload; fi

uninstall:
	for unit in systemd/*.service systemd/*.timer; do \
		rm -f $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$(basename $$unit); done
	rm -rf $(STAGE) $(DESTDIR)$(SYSUSERS_DIR)/m10jobs.conf
	@echo "kept $(DESTDIR)$(CONFDIR) (configuration and secrets): remove it by hand if unwanted"
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# What CI checks about the install: units current, a staged install verifies clean.
units-check: venv
	$(BIN)/m10 units render --check
	scripts/dev/check-install.sh
