# Entry points for people and CI. `make test` and `make demo` install what they
# need into .venv and start the Kafka broker themselves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# The test broker has its own port and run directory, so it never touches a
# broker started for the demo or for development.
TEST_KAFKA_PORT ?= 39092
TEST_KAFKA_RUN_DIR ?= .oddwatch/test-kafka
DEMO_KAFKA_PORT ?= 9092

PYTEST_ARGS ?=

.PHONY: install test demo lint format kafka-start kafka-stop clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_RUN_DIR=$(TEST_KAFKA_RUN_DIR) deploy/kafka/kafka.sh start
	status=0; \
	PYTHONFAULTHANDLER=1 ODDWATCH_TEST_KAFKA=127.0.0.1:$(TEST_KAFKA_PORT) \
		$(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_RUN_DIR=$(TEST_KAFKA_RUN_DIR) deploy/kafka/kafka.sh stop; \
	exit $$status

demo: install
	KAFKA_PORT=$(DEMO_KAFKA_PORT) deploy/kafka/kafka.sh start
	$(VENV)/bin/oddwatch demo --kafka 127.0.0.1:$(DEMO_KAFKA_PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

kafka-start:
	KAFKA_PORT=$(DEMO_KAFKA_PORT) deploy/kafka/kafka.sh start

kafka-stop:
	KAFKA_PORT=$(DEMO_KAFKA_PORT) deploy/kafka/kafka.sh stop

clean:
	KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_RUN_DIR=$(TEST_KAFKA_RUN_DIR) deploy/kafka/kafka.sh stop
	rm -rf $(VENV) .oddwatch .pytest_cache .ruff_cache
