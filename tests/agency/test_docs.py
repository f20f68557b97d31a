"""The agency-facing docs and the README cover the agency tool: every `doorbell-edge-agency` command has a README
row with its required arguments, and the guide and formats document the pieces an agency needs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edge.agency.cli import build_parser

REPO = Path(__file__).parents[2]


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    out += _leaves(sub, (*path, name))
                else:
                    out.append((" ".join((*path, name)), sub))
    return out


LEAVES = _leaves(build_parser())


def test_the_walk_finds_the_commands() -> None:
    assert {"keygen", "request new", "request check", "request sign", "court sign"} <= {p for p, _ in LEAVES}


@pytest.mark.parametrize("path", [p for p, _ in LEAVES])
def test_every_agency_command_has_a_readme_row_with_its_arguments(path: str) -> None:
    rows = re.findall(r"^\| `doorbell-edge-agency ([^`]+)` \|", (REPO / "README.md").read_text(), re.M)
    synopsis = next((s for s in rows if s == path or s.startswith(path + " ")), None)
    assert synopsis is not None, f"README.md has no row for `doorbell-edge-agency {path}`"
    parser = dict(LEAVES)[path]
    for action in parser._actions:
        if not action.option_strings:
            word = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            assert word in synopsis, f"`{path}` row lacks {word}"
        elif action.required:
            assert action.option_strings[0] in synopsis, f"`{path}` row lacks {action.option_strings[0]}"
        assert action.help, f"`doorbell-edge-agency {path}`: {action.dest} has no help"


def test_the_docs_say_what_an_agency_needs() -> None:
    guide = (REPO / "docs" / "agency-guide.md").read_text()
    formats = (REPO / "docs" / "formats.md").read_text()
    for needle in ("doorbell-edge-agency keygen", "minisign -S", "request check", "court sign", "published number",
                   "agencies add", "requests submit"):
        assert needle in guide, needle
    for needle in ("raw 32-byte", "base64", "envelope", '"version": 1', "fingerprint", "tail -c 32", "version"):
        assert needle in formats, needle
