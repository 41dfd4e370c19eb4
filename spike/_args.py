"""Argument types for every command line of the project: ``spike-server``,
``spike-client``, ``python -m spike`` and ``python -m spike.bench``.

Each ``type=`` function turns one argument's text into its value or raises
``argparse.ArgumentTypeError`` with a message that names the mistake;
:class:`Parser` makes argparse report it in one line with exit status 2.
They live here, below both :mod:`spike.cli` and :mod:`spike.bench`, so that
neither imports the other.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from collections.abc import Callable
from typing import NoReturn

from ._address import check_port, unbracket
from ._display import shorten
from .protocol import check_token

__all__ = [
    "TOKEN_VARIABLE",
    "Parser",
    "amount",
    "host",
    "non_negative_int",
    "port",
    "positive_int",
    "seconds",
    "token",
    "token_from_environment",
    "utf8_text",
    "whole_number",
]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the server picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    try:
        return check_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole_number(at_least: int) -> Callable[[str], int]:
    """A parser for a whole number, ``at_least`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least}, not {value}")
        return value

    parse.__name__ = "whole number"  # what argparse would name in "invalid ... value"
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def amount(
    unit: str, *, allow_zero: bool = False, at_most: float = math.inf
) -> Callable[[str], float]:
    """A parser for a finite number of ``unit`` (seconds, MiB), more than 0
    (or 0 too, with ``allow_zero``) and at most ``at_most``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None
        if math.isnan(value):
            raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}")
        if value < 0 or (value == 0 and not allow_zero):
            limit = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{unit} must be {limit}, not {text}")
        if value > at_most:
            raise argparse.ArgumentTypeError(f"{unit} must be at most {at_most:g}, not {text}")
        if math.isinf(value):
            raise argparse.ArgumentTypeError(f"{unit} must be a finite number, not {text}")
        return value

    parse.__name__ = unit  # what argparse would name in "invalid ... value"
    return parse


def seconds(allow_zero: bool, at_most: float = math.inf) -> Callable[[str], float]:
    """A parser for a number of seconds: see :func:`amount`."""
    return amount("seconds", allow_zero=allow_zero, at_most=at_most)


def utf8_text(text: str) -> str:
    """An argument that can be sent: on POSIX, bytes that are not UTF-8 reach
    Python as lone surrogates ("surrogateescape"), which cannot be encoded."""
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            shown = shorten(text.encode(errors="surrogateescape"))
        except UnicodeEncodeError:  # a lone surrogate that was never a byte
            shown = shorten(text)
        raise argparse.ArgumentTypeError(f"{shown} is not valid UTF-8 text") from None
    return text


#: The environment variable both ``spike-server`` and ``spike-client`` read
#: when ``--token`` is not given.
TOKEN_VARIABLE = "SPIKE_TOKEN"


def token(text: str) -> str:
    """``--token``: text a server can require (:func:`~spike.protocol.check_token`)."""
    try:
        return check_token(utf8_text(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def token_from_environment() -> str | None:
    """The token in :data:`TOKEN_VARIABLE` (None: unset or empty); a
    ValueError naming the variable if it cannot be a token."""
    value = os.environ.get(TOKEN_VARIABLE)
    if not value:
        return None
    try:
        return check_token(value)
    except ValueError as exc:
        raise ValueError(f"{TOKEN_VARIABLE}: {exc}") from None


def host(text: str) -> str:
    """A host as both ``spike-server`` and ``spike-client`` read it: a name,
    an IPv4 address, or an IPv6 address with or without brackets
    (``[::1]`` -> ``::1``). A port written into it is refused with a hint."""
    name = utf8_text(text)
    if not name:
        raise argparse.ArgumentTypeError("empty; give a host name or IP address")
    shown = shorten(name)
    if name.startswith("["):
        inner, bracket, rest = name[1:].partition("]")
        number = rest[1:]
        if bracket and rest[:1] == ":" and number.isascii() and number.isdigit():
            raise argparse.ArgumentTypeError(
                f"{shown} includes a port: use --host {inner} --port {number}"
            )
        if not bracket or rest or not _is_ipv6(inner):
            raise argparse.ArgumentTypeError(
                f"{shown} is not a host: brackets go around an IPv6 address, as in [::1]"
            )
        return unbracket(name)
    if ":" in name and not _is_ipv6(name):
        before, _, number = name.rpartition(":")
        if before and ":" not in before and number.isascii() and number.isdigit():
            raise argparse.ArgumentTypeError(
                f"{shown} includes a port: use --host {before} --port {number}"
            )
        raise argparse.ArgumentTypeError(f"{shown} is not a host name or IP address")
    try:
        # What socket.getaddrinfo() does to a name first; a name it cannot
        # encode ("a..b", a label over 63 characters) would fail there.
        name.encode("idna")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown} is not a valid host name") from None
    return name


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
