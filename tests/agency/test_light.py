"""The agency tool's import graph stays small: run its commands in a fresh interpreter in which the daemon's other
dependencies cannot be imported, and look at what was imported. None of the daemon's heavy libraries (OpenCV,
LiteRT/TFLite, numpy, matplotlib, PyAV) may appear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.agency.tools import WITHOUT_HEAVY_MODULES

HEAVY = ("cv2", "numpy", "matplotlib", "ai_edge_litert", "tflite_runtime", "av", "PIL", "paho")

SCRIPT = WITHOUT_HEAVY_MODULES + r"""
from pathlib import Path
from edge.agency.cli import main
work = Path(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(["keygen", str(work / "keys")])
with contextlib.redirect_stdout(io.StringIO()) as out:
    main(["request", "new", "--template"])
text = out.getvalue()
fill = {"request_id": "pd-1", "description": "x", "case_number": "c", "name": "n", "contact": "c", "badge": "b",
        "time": '"2026-01-01T10:00:00Z"', "start": '"2026-01-01T10:00:00Z"', "end": '"2026-01-01T10:30:00Z"',
        "device": "0123456789abcdef", "id": "pd"}
lines = []
for line in text.splitlines():
    if "CHANGE-ME" in line and not line.lstrip().startswith("#"):
        key = line.split(":")[0].strip().lstrip("- ")
        line = line.split(":")[0] + ": " + fill[key]
    lines.append(line)
(work / "r.yaml").write_text("\n".join(lines) + "\n")
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    codes = [main(["request", "check", str(work / "r.yaml")]),
             main(["request", "sign", str(work / "r.yaml"), "--key", str(work / "keys" / "signing.key")]),
             main(["court", "sign", str(work / "r.yaml"), "--key", str(work / "keys" / "signing.key")])]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def test_the_agency_commands_import_nothing_heavy(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["codes"] == [0, 0, 0]  # it did the work it was asked to
    assert (tmp_path / "r.yaml.minisig").exists() and (tmp_path / "r.yaml.court.minisig").exists()
    heavy = sorted({m.split(".")[0] for m in result["modules"]} & set(HEAVY))
    assert heavy == [], f"the agency tool imported {heavy}"


def test_the_console_script_starts_without_heavy_imports(tmp_path: Path) -> None:
    """`-X importtime` of the real entry point's --help: every module it loaded, heavy ones named."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; from edge.agency.cli import main; sys.argv=['x','--help']; main()"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0 and "keygen" in done.stdout
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "edge" in loaded and "minisign" in loaded
    assert sorted(loaded & set(HEAVY)) == []
