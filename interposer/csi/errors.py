"""Errors that become gRPC status codes, and the checks that raise them.

Every service raises ``CsiError``; the server turns it into the status the CSI
spec names for the case, with a message that names the offending field.
"""

from __future__ import annotations

import grpc


class CsiError(Exception):
    """A request failed with a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ALREADY_EXISTS, message)


def required(value: str, field: str) -> str:
    """A REQUIRED string field of a request, or INVALID_ARGUMENT naming it."""
    if not value:
        raise invalid(f"{field} is required")
    return value
