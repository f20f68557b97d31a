"""The package boundaries of docs/architecture.md, checked on every import in edge/ (function-level and
importlib ones too): which package may import which, and the one module that may import each third-party
library with quirks (picamera2, paho, the TFLite runtime, PyAV).

Run against another tree: `python tests/test_architecture.py PATH/TO/edge` prints every violation there.
"""

from __future__ import annotations

import ast
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[1] / "edge"

# (importer group, imported group, why). A group is a package under edge/ ("footage"), or "config" for the
# typed config and its loader. Why: docs/architecture.md, one paragraph per arrow.
FORBIDDEN = (
    ("footage", "vision", "footage never reaches face recognition: no agency's face is ever matched"),
    ("footage", "mqtt", "the footage policy and audit know no transport; their events go through the journal"),
    ("footage", "camera", "footage works on stored clips, never on the live camera"),
    ("vision", "mqtt", "recognition publishes events to the bus, never to a transport"),
    ("vision", "footage", "recognition knows nothing of requests, warrants or exports"),
    ("camera", "vision", "capture is the first stage: it knows nothing of what later stages look for"),
    ("events", "mqtt", "the journal is the device's own history; MQTT is one consumer of it"),
    ("recording", "vision", "clips are stored as captured (masked), never shaped by recognition"),
    ("recording", "mqtt", "recording reports through the bus like every stage"),
    ("recording", "footage", "the clip store serves footage requests; it does not know them"),
)
CONFIG_MODULES = (
    "edge.config",
    "edge.config_base",
    "edge.config_capture",
    "edge.config_mqtt",
    "edge.config_recording",
    "edge.config_footage",
    "edge.config_load",
)
CONFIG_MAY_IMPORT = ("edge.errors", *CONFIG_MODULES)

# third-party module -> the one edge module (or package, ending in '.') allowed to import it
ADAPTERS = {
    "picamera2": ("edge.camera.",),
    "paho": ("edge.mqtt.client",),
    "ai_edge_litert": ("edge.vision.runtime",),
    "tflite_runtime": ("edge.vision.runtime",),
    "tensorflow": ("edge.vision.runtime",),
    "av": ("edge.recording.codec",),
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str
    where: str  # file:line


def module_name(edge: Path, path: Path) -> str:
    parts = list(path.relative_to(edge.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(edge: Path, path: Path) -> list[Import]:
    """Every import in the file: statements at any depth, and importlib.import_module / __import__ /
    importlib.util.find_spec calls with a literal name."""
    name = module_name(edge, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        found.append(Import(name, target, f"{path}:{getattr(node, 'lineno', 0)}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            add(base, node)
            for alias in node.names:  # `from edge.vision import runtime` imports edge.vision.runtime
                add(f"{base}.{alias.name}", node)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__", "find_spec"):
                add(node.args[0].value, node)
    return found


def all_imports(edge: Path) -> list[Import]:
    return [imp for path in sorted(edge.rglob("*.py")) for imp in imports_of(edge, path)]


def group(module: str) -> str | None:
    if module in CONFIG_MODULES:
        return "config"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edge" else None


def violations(edge: Path) -> list[str]:
    out: list[str] = []
    for imp in all_imports(edge):
        source, target = group(imp.importer), group(imp.imported)
        for a, b, why in FORBIDDEN:
            if source == a and target == b:
                out.append(f"{imp.where}: {imp.importer} imports {imp.imported} ({a} -> {b} is forbidden: {why})")
        if source == "config" and imp.imported.split(".")[0] == "edge" and not any(
                imp.imported == allowed or imp.imported.startswith(allowed + ".") for allowed in CONFIG_MAY_IMPORT):
            out.append(f"{imp.where}: {imp.importer} imports {imp.imported} (config may import only edge.errors "
                       "and the standard library: every other package depends on it)")
        top = imp.imported.split(".")[0]
        if top in ADAPTERS and not any(
                imp.importer == owner or (owner.endswith(".") and imp.importer.startswith(owner))
                for owner in ADAPTERS[top]):
            out.append(f"{imp.where}: {imp.importer} imports {imp.imported} (only {' '.join(ADAPTERS[top])} may: "
                       "one adapter per third-party library)")
    return out


def test_the_tree_keeps_its_boundaries() -> None:
    found = violations(EDGE)
    assert not found, "boundary violations (docs/architecture.md):\n" + "\n".join(found)


def test_the_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "edge"
    (pkg / "footage").mkdir(parents=True)
    (pkg / "footage" / "__init__.py").write_text("")
    (pkg / "footage" / "x.py").write_text(
        "import importlib\n"
        "def f():\n"
        "    try:\n"
        "        from ..vision import runtime\n"
        "    except ImportError:\n"
        "        pass\n"
        "    importlib.import_module('edge.mqtt.client')\n"
        "    import edge.camera.stage\n"
        "    __import__('av')\n")
    found = violations(pkg)
    assert sorted(line.split(" (")[0].rsplit(": ", 1)[1] for line in found) == [
        "edge.footage.x imports av",
        "edge.footage.x imports edge.camera.stage",
        "edge.footage.x imports edge.mqtt.client",
        "edge.footage.x imports edge.vision",  # `from ..vision import runtime`: the package ...
        "edge.footage.x imports edge.vision.runtime",  # ... and the module
    ]


@pytest.mark.parametrize(("file", "line", "arrow"), [
    # the two broken boundaries issue 14 was filed with, put back the way they were written
    ("footage/redact.py", "    from edge.vision.runtime import load_model\n", "footage -> vision"),
    ("footage/notify.py", "    from edge.mqtt.outbox import emit\n", "footage -> mqtt"),
    ("events/journal.py", "from edge.mqtt.payload import check_event\n", "events -> mqtt"),
    ("config.py", "from edge.clock import Clock\n", "config may import only"),
    ("recording/store.py", "    import paho.mqtt.client\n", "one adapter per third-party library"),
])
def test_a_broken_boundary_is_caught(tmp_path: Path, file: str, line: str, arrow: str) -> None:
    tree = tmp_path / "edge"
    shutil.copytree(EDGE, tree, ignore=shutil.ignore_patterns("__pycache__", "*.tflite"))
    target = tree / file
    body = target.read_text()
    if line.startswith(" "):  # inside a function, behind try/except ImportError as it was
        body += "\n\ndef _smuggled():\n    try:\n" + "    " + line + "    except ImportError:\n        pass\n"
    else:
        body += "\n" + line
    target.write_text(body)
    found = violations(tree)
    assert found and all(arrow in line and file in line for line in found), found


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else EDGE
    problems = violations(root)
    print("\n".join(problems) or "no violations")
    sys.exit(1 if problems else 0)
