.PHONY: run test lint
run:
	python3 dev.py run
test:
	python3 dev.py test
lint:
	.venv/bin/ruff check . && .venv/bin/lint-imports && DJANGO_SETTINGS_MODULE=hitl.settings.test .venv/bin/mypy annotations workers hitl
