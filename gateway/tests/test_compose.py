"""compose.yaml and the Dockerfile: what production depends on, checked without a Docker engine."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
SECRETS = {"SECRET_KEY": "s", "ACCOUNTS_KEY_PEPPER": "p", "PROXY_SECRETS_KEY": "k"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((BASE_DIR / "compose.yaml").read_text())


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else the standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_the_services_are_the_database_the_broker_a_migration_and_the_three_processes(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "web", "worker", "beat"}
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    assert compose["services"]["redis"]["image"] == "redis:7"
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "spool"}


def test_the_database_and_redis_have_healthchecks_the_others_wait_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"] == ["CMD-SHELL", "pg_isready -U gateway -d gateway"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    wait = {"postgres": "service_healthy", "redis": "service_healthy", "migrate": "service_completed_successfully"}
    for name in ("web", "worker", "beat"):
        assert {dep: cond["condition"] for dep, cond in services[name]["depends_on"].items()} == wait
    assert services["migrate"]["restart"] == "no"


def test_web_runs_several_workers_with_shared_metrics_json_logs_and_a_health_check(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    env = web["environment"]
    assert (env["LOG_FORMAT"], env["PROMETHEUS_MULTIPROC_DIR"], env["UVICORN_WORKERS"]) == (
        "json",
        "/tmp/prometheus",
        "${WEB_WORKERS:-4}",
    )
    assert web["tmpfs"] == ["/tmp/prometheus:uid=10001,gid=10001"]  # empty at every start: no stale values
    assert "/healthz" in web["healthcheck"]["test"][-1]
    assert web["env_file"] == ".env"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # never the insecure development default


def test_exactly_one_beat_and_workers_without_the_connection_pool(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "gateway.celery", "beat"]
    assert "deploy" not in services["beat"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "gateway.celery", "worker"]
    assert services["worker"]["environment"]["DATABASE_POOL"] == "0"


def test_the_image_is_slim_runs_as_a_user_and_copies_no_local_secrets() -> None:
    lines = [line.strip() for line in (BASE_DIR / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.12-slim" in lines
    assert "RUN pip install -r requirements/base.txt" in lines
    assert "USER gateway" in lines
    assert any("collectstatic --noinput" in line for line in lines)
    assert not any(
        line.startswith("COPY . ") or ".env" in line.split("#")[0] for line in lines if line.startswith("COPY")
    )


@pytest.mark.skipif(_compose_command() is None, reason="neither `docker compose` nor `docker-compose` is installed")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    # In a copy, with the .env the quick start writes first.
    shutil.copy(BASE_DIR / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n" for name, value in SECRETS.items()))
    command = _compose_command()
    assert command is not None
    done = subprocess.run(
        [*command, "-f", "compose.yaml", "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **SECRETS},
    )
    assert done.returncode == 0, done.stderr
