"""A misspelt setting name must fail here rather than read as a silent default at run time."""

import ast
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("inference_platform", "engines", "models_registry", "api", "serving", "monitoring")


def referenced_settings() -> dict[str, list[str]]:
    """Every `settings.UPPER_NAME` read in the project's code, with where it is read."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "settings"
                    and node.attr.isupper()
                ):
                    found.setdefault(node.attr, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_the_scan_sees_the_code():
    assert {"INFERENCE_ENGINE", "PRELOAD_MODELS", "BUNDLED_MODEL_NAME"} <= set(referenced_settings())


def test_every_referenced_setting_exists():
    missing = {name: where for name, where in referenced_settings().items() if not hasattr(settings, name)}
    assert not missing, f"settings read but never defined: {missing}"


def test_every_environment_setting_is_documented():
    from inference_platform.settings import env

    readme = (REPO / "README.md").read_text()
    undocumented = [name for name in env.scheme if f"`{name}`" not in readme]
    assert not undocumented, f"document these variables in the README: {undocumented}"


def test_readme_shows_the_capability_table_from_the_code():
    from engines.capabilities import markdown_table

    assert markdown_table() in (REPO / "README.md").read_text(), "regenerate the README's capability table"
