"""Amounts and durations as people type them, read into exact integers (pure).

Wei are ``int`` all the way: ``0.5eth`` is parsed with :class:`decimal.Decimal`, never a
float, and a value that is not a whole number of wei (``1.5wei``, ``0.1234567891234gwei``
with too many decimals) is refused rather than rounded.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

from client.errors import BadAmount, BadDuration

WEI_PER_UNIT = {"wei": 1, "gwei": 10**9, "eth": 10**18, "ether": 10**18}
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AMOUNT = re.compile(r"\s*([0-9]{1,80}(?:\.[0-9]{0,80})?|\.[0-9]{1,80})\s*([a-zA-Z]*)\s*")
_DURATION = re.compile(r"\s*([0-9]+)\s*([smhd]?)\s*")


def parse_amount_wei(text: str) -> int:
    """``0.5eth`` → 500000000000000000; ``500gwei``, ``12wei``, plain ``1000`` (wei)."""
    found = _AMOUNT.fullmatch(text)
    if not found:
        raise BadAmount(text=text, reason="expected a number followed by eth, gwei or wei")
    number, unit = found.group(1), found.group(2).lower() or "wei"
    if unit not in WEI_PER_UNIT:
        raise BadAmount(text=text, reason=f"unknown unit {unit!r}; allowed: eth, gwei, wei")
    try:
        exact = Context(prec=200)  # never round: uint256 needs 78 digits
        value = exact.multiply(Decimal(number), Decimal(WEI_PER_UNIT[unit]))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise BadAmount(text=text, reason=str(exc)) from exc
    if value != value.to_integral_value():
        raise BadAmount(text=text, reason="not a whole number of wei")
    return int(value)


def parse_duration_s(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``1d`` or plain seconds → whole seconds."""
    found = _DURATION.fullmatch(text)
    if not found:
        raise BadDuration(text=text, reason="expected a whole number with s, m, h or d")
    return int(found.group(1)) * SECONDS_PER_UNIT[found.group(2) or "s"]


def format_wei(amount_wei: int, symbol: str = "ETH") -> str:
    """``1500000000000000000`` → ``1.5 ETH`` (exact: no float on the way)."""
    whole, frac = divmod(amount_wei, 10**18)
    if not frac:
        return f"{whole} {symbol}"
    digits = f"{frac:018d}".rstrip("0")
    return f"{whole}.{digits} {symbol}"
