"""The owner's side of the key exchange: an agency's entry in `footage_requests.agencies`, printed or written into
the config file in place (comments and layout kept; the result is validated before it replaces the file)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from edge.agency.encodings import b64, encryption_key_raw, fingerprint, signing_key_raw

AGENCY_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class EntryError(ValueError):
    pass


@dataclass(frozen=True)
class AgencyEntry:
    agency_id: str
    name: str
    signing_raw: bytes
    encryption_raw: bytes

    @classmethod
    def parse(cls, agency_id: str, name: str, signing: str, encryption: str) -> AgencyEntry:
        import re

        if not re.match(AGENCY_ID, agency_id):
            raise EntryError(f"agency id {agency_id!r} must be letters, digits and . _ : / - (as in its requests' "
                             "agency.id)")
        try:
            signing_raw = signing_key_raw(_value_or_file(signing))
        except ValueError as exc:
            raise EntryError(f"--signing-key: {exc}") from exc
        try:
            encryption_raw = encryption_key_raw(_value_or_file(encryption))
        except ValueError as exc:
            raise EntryError(f"--encryption-key: {exc}") from exc
        return cls(agency_id, name, signing_raw, encryption_raw)

    @property
    def signing_fingerprint(self) -> str:
        return fingerprint(self.signing_raw)

    @property
    def encryption_fingerprint(self) -> str:
        return fingerprint(self.encryption_raw)

    def lines(self, indent: int) -> list[str]:
        """The entry as YAML lines, the agency id at `indent` spaces."""
        pad, inner = " " * indent, " " * (indent + 2)
        return [
            f"{pad}{_scalar(self.agency_id)}:",
            f"{inner}name: {_scalar(self.name)}",
            f"{inner}# fingerprints: signing {self.signing_fingerprint}, encryption {self.encryption_fingerprint}",
            f"{inner}signing_key: {b64(self.signing_raw)}",
            f"{inner}encryption_key: {b64(self.encryption_raw)}",
        ]

    def block(self) -> str:
        return "\n".join(["footage_requests:", "  agencies:", *self.lines(4)]) + "\n"


def _scalar(text: str) -> str:
    """A YAML scalar for `text`, quoted only when plain style would not read back as the same string."""
    dumped = yaml.safe_dump(text, default_flow_style=True, width=10_000).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def _value_or_file(value: str) -> str:
    """A key given on the command line, or the path of a file holding it (e.g. signing.pub, encryption.pub)."""
    path = Path(value)
    if len(value) < 4096 and "\n" not in value and path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    return value


def insert_entry(text: str, entry: AgencyEntry) -> str:
    """`text` (a config file) with the agency added under footage_requests.agencies, every other line as it was."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise EntryError(f"the config file does not parse as YAML: {str(exc).splitlines()[0]}") from exc
    finally:
        loader.dispose()
    lines = text.splitlines()
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value in ("", "~", "null")):
        return text.rstrip("\n") + ("\n" if text.strip() else "") + entry.block()
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise EntryError("the config file's top level is not a block mapping of sections; add the entry by hand")
    section = _child(root, "footage_requests")
    if section is None:
        return text.rstrip("\n") + "\n" + entry.block()
    key_node, value = section
    if not isinstance(value, yaml.MappingNode) or value.flow_style or not value.value:
        _require_empty(value, "footage_requests")
        return _replace_empty(text, key_node, value, ["agencies:", *entry.lines(2)])
    agencies = _child(value, "agencies")
    if agencies is None:
        indent = value.value[0][0].start_mark.column
        at = key_node.start_mark.line + 1
        new = [" " * indent + "agencies:", *entry.lines(indent + 2)]
        return "\n".join(lines[:at] + new + lines[at:]) + "\n"
    akey, avalue = agencies
    if isinstance(avalue, yaml.MappingNode) and not avalue.flow_style and avalue.value:
        if _child(avalue, entry.agency_id) is not None:
            raise EntryError(f"agency {entry.agency_id!r} is already in the config; edit or remove it by hand first")
        first = avalue.value[0][0].start_mark
        return "\n".join(lines[:first.line] + entry.lines(first.column) + lines[first.line:]) + "\n"
    _require_empty(avalue, "footage_requests.agencies")
    return _replace_empty(text, akey, avalue, entry.lines(0))


def _child(mapping: yaml.MappingNode, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == name:
            return key_node, value_node
    return None


def _require_empty(node: yaml.Node, where: str) -> None:
    empty_scalar = isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")
    empty_flow = isinstance(node, yaml.MappingNode) and not node.value
    if not (empty_scalar or empty_flow):
        raise EntryError(f"{where} is written in a form this command does not edit (flow style); add the entry by "
                         "hand")


def _replace_empty(text: str, key_node: yaml.Node, value: yaml.Node, body: list[str]) -> str:
    """Drop an empty value (`{}`, `~` or nothing) after `key:` and put `body` below it, indented under the key."""
    start, end = value.start_mark.index, value.end_mark.index
    text = text[:start] + text[end:]
    lines = text.splitlines()
    at = key_node.start_mark.line
    lines[at] = lines[at].rstrip()
    indent = key_node.start_mark.column + 2
    return "\n".join(lines[:at + 1] + [" " * indent + line for line in body] + lines[at + 1:]) + "\n"


def write_config(path: Path, text: str) -> None:
    """Replace the config file in one step (temp file beside it, fsync, rename), keeping its mode and owner."""
    info = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, info.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, info.st_uid, info.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
