"""The Docker and compose files agree with the code: settings, commands, paths, the setup script.

Docker cannot run here, so these read the files and check each claim against the real code.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from cli.main import build_parser
from config import Settings, load_settings
from config.settings import ServerSettings
from server.main import refusal
from server.routes import health
from server.scheduler import schedule_triggers
from server.uploads import UPLOADS_FOLDER

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
DEPLOY_DOC_ZH = REPO / "docs" / "deploy.zh-CN.md"

# Variables in the deploy files that are not PEITU_ settings, and who reads each one.
NON_SETTING_VARIABLES = {
    "DASHSCOPE_API_KEY",  # config/settings.py fills the vision and rerank keys from it
    "PHOTOS_DIR",  # docker-compose.yml: the host's photo folder
    "DATA_DIR",  # docker-compose.yml: the host's data folder
    "PEITU_SETUP_RUNTIME_ONLY",  # scripts/setup.sh: skip test tooling
    "PEITU_CI_DOCKER",  # .ci/run: 0 skips the Docker deployment test, 1 requires it
}
_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def setting_env_names(model: type[BaseModel], prefix: str = "PEITU_") -> set[str]:
    """Every environment variable name `Settings` reads, nested models joined with `__`."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env_name = prefix + name.upper()
        names.add(env_name)
        nested = [t for t in (field.annotation, *get_args(field.annotation)) if _is_model(t)]
        for sub_model in nested:
            names |= setting_env_names(sub_model, env_name + "__")
    return names


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def env_example_assignments(*, include_commented: bool) -> dict[str, str]:
    """NAME=value lines of .env.example; commented-out ones too when asked."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not include_commented:
            continue
        match = _ASSIGNMENT.match(line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def dockerfile_instructions(keyword: str) -> list[str]:
    """Arguments of each Dockerfile instruction `keyword`, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [line.split(None, 1)[1] for line in lines if line.upper().startswith(keyword + " ")]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in dockerfile_instructions("ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def referenced_variables() -> set[str]:
    compose_text = COMPOSE.read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    names |= set(env_example_assignments(include_commented=True))
    names |= set(dockerfile_env())
    for service in compose()["services"].values():
        names |= set(service.get("environment") or {})
    return {name for name in names if name.startswith("PEITU_") or name in NON_SETTING_VARIABLES}


def test_every_peitu_variable_is_a_setting() -> None:
    known = setting_env_names(Settings) | NON_SETTING_VARIABLES
    unknown = sorted(referenced_variables() - known)
    assert not unknown, f"not settings of config.Settings: {unknown}"
    assert "PEITU_WECHAT__ENDPOINT" in known  # the walk reaches nested models


@pytest.mark.parametrize("include_commented", [False, True], ids=["active", "all-options"])
def test_env_example_values_are_valid_settings(
    include_commented: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("PEITU_") or name == "DASHSCOPE_API_KEY":
            monkeypatch.delenv(name)
    for name, value in env_example_assignments(include_commented=include_commented).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # raises SettingsInvalid on any bad value
    assert schedule_triggers(settings.indexing)  # the cron example parses too
    if not include_commented:
        assert settings.indexing.schedule_minutes > 0
        # The example's sk-your-dashscope-key is a placeholder: it counts as no key.
        assert settings.vision.api_key is None and settings.rerank.api_key is None
        # Left empty on purpose: `peitu serve` refuses to listen on 0.0.0.0 until it is set.
        assert settings.admin_token is not None and not settings.admin_token.get_secret_value()
        assert refusal(settings.model_copy(update={"server": ServerSettings(host="0.0.0.0")}))


def test_env_example_names_the_docker_host_for_local_models() -> None:
    values = env_example_assignments(include_commented=False)
    assert values["PEITU_VISION__BASE_URL"].startswith("https://dashscope")
    local_urls = re.findall(r"http://host\.docker\.internal:\d+/v1", ENV_EXAMPLE.read_text())
    assert local_urls, "the Ollama example should use host.docker.internal"
    extra_hosts = compose()["x-peitu"]["extra_hosts"]
    assert "host.docker.internal:host-gateway" in extra_hosts


def test_dockerfile_needs_no_registry_and_pins_cpu_torch() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not text.startswith("# syntax="), "BuildKit would fetch the frontend from Docker Hub"
    stages = dockerfile_instructions("FROM")  # a build stage converts the offline detector
    assert stages[-1] == "python:3.11-slim"
    assert {stage.split()[0] for stage in stages} == {"python:3.11-slim"}
    torch_pin = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert torch_pin and f"ARG TORCH_SPEC=torch=={torch_pin.group(1)}+cpu" in text
    # An empty PIP_EXTRA_INDEX_URL falls back to the CPU index instead of PyPI's CUDA build.
    assert '"${PIP_EXTRA_INDEX_URL:-https://download.pytorch.org/whl/cpu}"' in text
    users = dockerfile_instructions("USER")
    assert users and users[-1] not in {"root", "0"}


def test_dockerfile_installs_the_projects_dependencies_before_its_code() -> None:
    runs = dockerfile_instructions("RUN")
    copies = dockerfile_instructions("COPY")
    assert any("tomllib" in run and "['project']['dependencies']" in run for run in runs)
    assert any("opencv-python-headless" in run for run in runs), "no GUI libraries in the image"
    image = [c for c in copies if not c.startswith("scripts/")]  # the detector stage's inputs
    assert image[0].split()[-2:] == ["pyproject.toml", "/app/"]  # the dependency layer's input
    assert copies[-1].split()[-2:] == [".", "/app"]  # code last: a change rebuilds only that
    assert any("bash scripts/fetch_m3e_small.sh" in run for run in runs)


def test_home_and_cache_folders_belong_to_the_user_the_containers_run_as() -> None:
    runs = " ".join(dockerfile_instructions("RUN"))
    assert "useradd --uid 1000" in runs and "/home/peitu/.cache" in runs
    assert "chown peitu:peitu /app /data /photos /home/peitu/.cache" in runs
    # A build cache mounted under the home folder would leave ~/.cache owned by root.
    assert "target=/home" not in runs
    assert dockerfile_env()["XDG_CACHE_HOME"] == "/home/peitu/.cache"


def test_setup_script_honours_runtime_only_switch() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "PEITU_SETUP_RUNTIME_ONLY" in setup, "scripts/setup.sh must be able to skip test tooling"
    browser = (REPO / "scripts" / "setup_browser.sh").read_text(encoding="utf-8")
    assert "PEITU_SETUP_RUNTIME_ONLY" in browser


def test_dockerfile_paths_match_compose_volumes() -> None:
    env = dockerfile_env()
    assert env["PEITU_DATA_DIR"] == "/data"
    assert env["PEITU_LIBRARY"] == "/photos"
    volumes = dockerfile_instructions("VOLUME")
    assert volumes and {"/data", "/photos"} <= set(re.findall(r"/\w+", volumes[0]))
    services = compose()["services"]
    mounted = {volume.rsplit(":", 1)[-1] for volume in services["server"]["volumes"]}
    assert mounted == {"/data", "/photos"}
    assert "volumes" not in services["bot"]  # it asks the server: no index, no library of its own


def _parses_as_peitu(command: list[str]) -> None:
    assert command[0] == "peitu", command
    try:
        build_parser().parse_args(command[1:])
    except SystemExit as error:
        raise AssertionError(f"not a valid peitu command: {command}") from error


def test_commands_are_real_peitu_subcommands() -> None:
    services = compose()["services"]
    assert {"server", "bot", "chroma"} <= set(services)
    assert services["server"]["command"][:2] == ["peitu", "serve"]
    assert services["bot"]["command"][:2] == ["peitu", "bot"]
    for name in ("server", "bot"):
        _parses_as_peitu(services[name]["command"])
    cmd = dockerfile_instructions("CMD")
    assert len(cmd) == 1
    _parses_as_peitu(yaml.safe_load(cmd[0]))  # the JSON exec form is valid YAML


def test_services_share_image_env_file_and_volumes() -> None:
    services = compose()["services"]
    for name in ("server", "bot"):
        assert services[name]["env_file"] == ".env"
        assert services[name]["image"] == services["server"]["image"]
    assert services["bot"]["healthcheck"] == {"disable": True}
    ports = services["server"]["ports"]
    assert any(str(port).endswith(":${PEITU_SERVER__PORT:-8000}") for port in ports)
    assert ServerSettings().port == 8000
    assert dockerfile_instructions("EXPOSE") == ["8000"]


def test_chroma_profile_is_wired_to_the_chroma_url() -> None:
    services = compose()["services"]
    chroma = services["chroma"]
    assert chroma["profiles"] == ["chroma"]
    assert chroma["image"].startswith("chromadb/chroma:")
    pinned = re.search(r'"chromadb==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned and chroma["image"].endswith(":" + pinned.group(1))
    url = env_example_assignments(include_commented=True)["PEITU_CHROMA__URL"]
    assert url == "http://chroma:8000"
    assert services["server"]["depends_on"]["chroma"]["required"] is False
    assert "chroma" not in services["bot"]["depends_on"]  # only the server opens the index


def test_the_default_start_is_the_server_alone() -> None:
    """`docker compose up -d` starts only what runs without a WeChat endpoint (most people have
    none at first): the bot waits behind the "wechat" profile instead of restarting for ever."""
    services = compose()["services"]
    default = sorted(name for name, service in services.items() if "profiles" not in service)
    assert default == ["server"]
    assert services["bot"]["profiles"] == ["wechat"]
    for text in (DEPLOY_DOC, DEPLOY_DOC_ZH, ENV_EXAMPLE):
        assert "--profile wechat" in text.read_text(encoding="utf-8"), text.name


def test_bot_service_asks_the_server() -> None:
    bot = compose()["services"]["bot"]
    assert (
        bot["environment"]["PEITU_BOT__SERVER_URL"] == "http://server:${PEITU_SERVER__PORT:-8000}"
    )
    assert bot["depends_on"]["server"]["condition"] == "service_started"
    url = bot["environment"]["PEITU_BOT__SERVER_URL"].replace("${PEITU_SERVER__PORT:-8000}", "8000")
    assert load_settings(bot={"server_url": url}).bot.server_url == "http://server:8000"


def test_healthcheck_asks_a_real_route() -> None:
    checks = dockerfile_instructions("HEALTHCHECK")
    assert len(checks) == 1
    asked = re.findall(r"http://127\.0\.0\.1:%s(/[\w/]*)", checks[0])
    assert asked == ["/healthz"]
    assert asked[0] in {getattr(route, "path", None) for route in health.router.routes}
    assert "curl" not in checks[0]  # the slim image has none


def test_deploy_doc_matches_the_files() -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    for needle in (
        "docker compose up -d",
        "--profile chroma",
        "PEITU_CHROMA__URL=http://chroma:8000",
        "PEITU_WECHAT__ENDPOINT",
        "PEITU_WECHAT__TOKEN",
        "PEITU_INDEXING__SCHEDULE_MINUTES",
        "DASHSCOPE_API_KEY",
        "host.docker.internal",
        f"/photos/{UPLOADS_FOLDER}",
        "catalog.sqlite3",
        "PHOTOS_DIR",
        "DATA_DIR",
        "PEITU_BOT__SERVER_URL",
        "Compose v2.20",
        "scripts/docker_e2e.sh",
    ):
        assert needle in doc, f"docs/deploy.md does not mention {needle}"
    both = doc + DEPLOY_DOC_ZH.read_text(encoding="utf-8")  # the Chinese guide names real ones too
    for name in re.findall(r"\bPEITU_[A-Z0-9_]*[A-Z0-9]", both):
        assert name in setting_env_names(Settings) | NON_SETTING_VARIABLES, name
