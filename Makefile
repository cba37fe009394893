# The two commands a new user needs are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.bmc/dagster

.PHONY: setup ferretdb postgres browser demo test lint ui bench clean

setup: $(VENV)/.installed ferretdb

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The embedded MongoDB-compatible server (FerretDB v1.24.2), built with Go into .tools/.
ferretdb: $(VENV)/.installed
	@if command -v go >/dev/null 2>&1; then \
		$(BIN)/bmc-backup devdb install; \
	else \
		echo "Go not found: the demo will use mongomock and the integration tests will be skipped"; \
	fi

# PostgreSQL server binaries, for the tests of Dagster on PostgreSQL (Debian's package; the tests
# start their own server in a temporary directory and skip, saying why, where there is none).
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q postgresql >/dev/null 2>&1 || \
			echo "PostgreSQL could not be installed: its tests will be skipped"; \
	else \
		echo "no PostgreSQL server binaries: its tests will be skipped"; \
	fi

# Chromium from Debian's packages, for the browser test of the Dagster UI (Playwright drives it).
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
			echo "Chromium could not be installed: the browser test will be skipped"; \
	else \
		echo "no Chromium (Debian package chromium): the browser test will be skipped"; \
	fi

demo: setup
	$(BIN)/bmc-backup demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup postgres browser lint
	$(BIN)/pytest

# Dagster's UI on http://127.0.0.1:3000. It has no authentication of its own: another address
# needs UI_EXPOSE=yes, and an authenticating reverse proxy in front (docs/UI.md).
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
ui: setup
	@case "$(UI_HOST)" in \
		127.*|localhost|::1) ;; \
		*) if [ "$(UI_EXPOSE)" != yes ]; then \
			echo "make ui: refusing to serve the Dagster UI on $(UI_HOST): it has no authentication, so anyone who reaches it can launch restores; put a reverse proxy with authentication in front (docs/UI.md) and run again with UI_EXPOSE=yes" >&2; \
			exit 2; \
		fi ;; \
	esac
	$(BIN)/python -c 'import pathlib, sys; from bmc_pipeline.jobs.history import ensure_instance_config as e; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); e(p)' "$(DAGSTER_HOME)"
	@if [ -z "$$BMC_BACKUP_KEY$$BMC_BACKUP_KEY_FILE" ] && [ -f .bmc/demo.key ]; then \
		echo "using the demo key .bmc/demo.key"; \
		umask 077; BMC_BACKUP_KEY_FILE=.bmc/demo.key $(BIN)/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT); \
	else \
		umask 077; $(BIN)/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT); \
	fi

bench: setup
	$(BIN)/python -m benchmarks.archive

clean:
	-$(BIN)/bmc-backup devdb stop
	rm -rf .bmc backups chatbot_files
