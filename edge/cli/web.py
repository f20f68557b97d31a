"""`doorbell-edge web setup-code`: the one-time code that lets the owner create their account on the page."""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.common import add_config_arg, load_config_for


def register(subparsers: Any) -> None:
    web = subparsers.add_parser("web", help="the owner's page (HTTPS): setup code, certificate fingerprint")
    sub = web.add_subparsers(dest="web_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("setup-code", help="print a one-time code to create the owner account on the page "
                       "(and the certificate's fingerprint to check)")
    add_config_arg(p)
    p.set_defaults(func=_setup_code)


def _setup_code(args: argparse.Namespace) -> int:
    from edge.clock import SystemClock
    from edge.errors import EdgeError
    from edge.web.auth import AuthStore
    from edge.web.tls import ensure_tls, fingerprint

    config = load_config_for(args)
    clock = SystemClock()
    auth = AuthStore(config.state_dir, config.web, lambda: clock.now().timestamp())
    if auth.has_owner():
        raise EdgeError("the page already has an owner; a setup code is only for the first account")
    tls = ensure_tls(config)
    code = auth.new_setup_code()
    minutes = config.web.setup_code_ttl_min
    print(f"setup code: {code}")
    print(f"valid for {minutes:g} minutes, once; any earlier code no longer works")
    if tls.ca is not None:
        print(f"certificate authority fingerprint (SHA-256): {fingerprint(tls.ca.read_bytes())}")
        print("the setup page shows the same fingerprint; if it differs, do not continue")
    if not config.web.enabled:
        print("note: web.enabled is false in the config, so the daemon does not serve the page yet")
    return 0
