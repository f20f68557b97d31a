"""Config of footage requests: trusted agencies and courts (their public keys), and the rules requests meet."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edge.config_base import Section


def _key32(value: str, what: str) -> str:
    """A base64 32-byte public key (Ed25519 or X25519); the error names what is wrong."""
    import base64
    import binascii

    if value.strip().startswith(("-----BEGIN", "age1", "AGE-SECRET-KEY-")):
        raise ValueError(f"{what} must be base64 of the raw 32-byte key, not a PEM block or an age key: "
                         "`doorbell-edge agencies add` converts those (docs/formats.md, \"Key encodings\")")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc
    if len(raw) != 32:
        # Say which form was given and how to get the raw one (docs/formats.md, "Key encodings").
        hint = {
            44: "; 44 bytes is the DER form openssl prints (`openssl pkey -pubout -outform DER | base64`): the raw key "
                "is its last 32 bytes (`... -outform DER | tail -c 32 | base64`)",
            42: "; 42 bytes is a minisign public key (RW...): `doorbell-edge agencies add` converts it",
            48: "; 48 bytes looks like a DER private key: give the public key",
        }.get(len(raw), "")
        raise ValueError(f"{what} must be base64 of the raw 32-byte key, but decodes to {len(raw)} bytes{hint}")
    return value


class AgencyConfig(Section):
    name: str = Field(min_length=1, description="The agency's name as the owner knows it.")
    signing_key: str = Field(description="Base64 Ed25519 public key that signs the agency's requests.")
    encryption_key: str = Field(description="Base64 X25519 public key export bundles are encrypted to.")

    @field_validator("signing_key")
    @classmethod
    def _signing(cls, value: str) -> str:
        return _key32(value, "signing_key (Ed25519 public key)")

    @field_validator("encryption_key")
    @classmethod
    def _encryption(cls, value: str) -> str:
        return _key32(value, "encryption_key (X25519 public key)")


class CourtConfig(Section):
    name: str = Field(min_length=1, description="The court's name.")
    signing_key: str = Field(description="Base64 Ed25519 public key the court signs warrants and orders with.")

    @field_validator("signing_key")
    @classmethod
    def _signing(cls, value: str) -> str:
        return _key32(value, "signing_key (Ed25519 public key)")


class MaxWindowHours(Section):
    warrant: float = Field(12, gt=0, le=24 * 31, description="Total hours of footage a warrant may cover.")
    court_order: float = Field(12, gt=0, le=24 * 31, description="Total hours a court order may cover.")
    subpoena: float = Field(12, gt=0, le=24 * 31, description="Total hours a subpoena (event metadata only) may cover.")
    consent_request: float = Field(1, gt=0, le=24 * 31, description="Total hours a request for consent may cover.")
    exigent: float = Field(1, gt=0, le=24 * 31, description="Total hours an emergency request may cover.")
    preservation: float = Field(72, gt=0, le=24 * 31, description="Total hours a preservation request may cover.")


class FootageRequestsConfig(Section):
    agencies: dict[str, AgencyConfig] = Field(
        default_factory=dict,
        description="Agencies whose signed requests are considered, by the id they use in requests; others are denied.",
    )
    trusted_courts: dict[str, CourtConfig] = Field(
        default_factory=dict,
        description="Courts whose signature on a warrant or court order counts as verified, by court id.",
    )
    auto_release_verified_warrants: bool = Field(
        False, description="Release a court-signed warrant without asking the owner (default: the owner decides)."
    )
    exigent: Literal["deny", "owner"] = Field(
        "deny", description="Emergency requests without a warrant: deny, or let the owner decide (notified at once)."
    )
    max_window_hours: MaxWindowHours = Field(
        default_factory=MaxWindowHours, description="Most hours of footage one request may cover, per legal basis."
    )
    warrant_max_age_days: int = Field(
        14, ge=1, le=365, description="A warrant or court order issued longer ago than this is stale and denied."
    )
    approval_valid_hours: float = Field(
        72, gt=0, le=24 * 90, description="An owner approval not used for an export within this many hours lapses."
    )
    max_active_holds_per_agency: int = Field(
        10,
        ge=1,
        le=1000,
        description="Most preservation holds one agency may have in force at once; one more is denied (HOLD_LIMIT) "
        "until a hold expires or the owner lifts one (`requests release-hold`).",
    )
