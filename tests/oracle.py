"""The total-queue oracle of the crash tests (Jepsen's ``total-queue`` checker).

A publisher token ``(t, c)`` (thread label, counter) is unique over a whole test, and
the payload published for it is derived from it, checksum included, so any byte a
queue invents or garbles shows. The child reports three kinds of event, one line each:

    try <t> <c>               publish is about to be called with payload(t, c)
    ack <id> <t> <c>          publish returned <id>
    got <id> <payload-json>   a consumer was handed message <id> (before it returned)

A test passes iff nothing is lost (acknowledged, never delivered), nothing unexpected
is delivered (not attempted), and no payload mismatches its id or its checksum.
Duplicates (an id delivered again after a crash) are allowed and only counted.
Stdlib only: the child process imports it too.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

Token = tuple[str, int]  # (publisher thread label, counter)


def payload(t: str, c: int) -> dict[str, object]:
    """The data published for token ``(t, c)``: its fields, a padding and their sha256."""
    pad = "x" * (c * 7 % 53)  # varies record sizes, so segment ends fall anywhere
    return {"t": t, "c": c, "pad": pad, "sha": _digest(t, c, pad)}


def _digest(t: object, c: object, pad: object) -> str:
    return hashlib.sha256(f"{t}/{c}/{pad}".encode()).hexdigest()


def token_of(data: object) -> Token | None:
    """The token a delivered payload claims, or None if it is garbage (bad shape or checksum)."""
    if not isinstance(data, dict) or set(data) != {"t", "c", "pad", "sha"}:
        return None
    t, c = data["t"], data["c"]
    if not isinstance(t, str) or not isinstance(c, int) or isinstance(c, bool):
        return None
    if data != payload(t, c) or data["sha"] != _digest(t, c, data["pad"]):
        return None
    return t, c


def complete_lines(raw: bytes) -> list[str]:
    """The whole lines of ``raw``; a last line without its newline (cut by a kill) is dropped."""
    lines = raw.split(b"\n")
    return [line.decode() for line in lines[:-1]]


@dataclass(frozen=True)
class Verdict:
    """What the oracle found; ``ok`` iff nothing is lost, unexpected or mismatched."""

    attempted: int
    acknowledged: int
    delivered: int  # distinct ids
    lost: list[int]  # acknowledged ids never delivered
    unexpected: list[int]  # delivered ids whose payload was never attempted
    mismatches: list[str]  # each names an id and what is wrong with it
    duplicates: int  # deliveries beyond the first of their id
    redelivered_ids: int  # ids delivered more than once
    recovered: int  # attempted, never acknowledged (outcome unknown at a crash), delivered

    @property
    def ok(self) -> bool:
        return not (self.lost or self.unexpected or self.mismatches)

    def summary(self) -> str:
        text = (
            f"attempted={self.attempted} acknowledged={self.acknowledged} "
            f"delivered={self.delivered} duplicates={self.duplicates} "
            f"(ids delivered more than once: {self.redelivered_ids}) "
            f"recovered={self.recovered} lost={len(self.lost)} "
            f"unexpected={len(self.unexpected)} mismatches={len(self.mismatches)}"
        )
        if self.lost:
            text += f"\nlost ids: {self.lost[:50]}"
        if self.unexpected:
            text += f"\nunexpected ids: {self.unexpected[:50]}"
        for problem in self.mismatches[:20]:
            text += f"\nmismatch: {problem}"
        return text


@dataclass
class History:
    """Every event of every run of one test, fed line by line; ``check()`` judges it."""

    attempted: set[Token] = field(default_factory=set)
    acked: dict[int, Token] = field(default_factory=dict)  # id -> token
    delivered: dict[int, list[object]] = field(default_factory=dict)  # id -> payloads seen
    problems: list[str] = field(default_factory=list)  # contradictions found while feeding

    def feed(self, lines: Iterable[str]) -> list[str]:
        """Record the oracle's events among ``lines``; return the other lines, in order."""
        others = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "try":
                t, c = rest.split(" ")
                self.attempted.add((t, int(c)))
            elif kind == "ack":
                msg_id, t, c = rest.split(" ")
                self._ack(int(msg_id), (t, int(c)))
            elif kind == "got":
                msg_id, data = rest.split(" ", 1)
                self.delivered.setdefault(int(msg_id), []).append(json.loads(data))
            else:
                others.append(line)
        return others

    def _ack(self, msg_id: int, token: Token) -> None:
        before = self.acked.setdefault(msg_id, token)
        if before != token:
            self.problems.append(f"id {msg_id} acknowledged for both {before} and {token}")

    def check(self) -> Verdict:
        lost = sorted(set(self.acked) - set(self.delivered))
        unexpected, mismatches = [], list(self.problems)
        owners: dict[Token, list[int]] = {}
        for msg_id, seen in sorted(self.delivered.items()):
            tokens = {token_of(data) for data in seen}
            if None in tokens:
                mismatches.append(f"id {msg_id}: garbage payload in {seen}")
            if len(tokens) > 1:
                mismatches.append(f"id {msg_id}: delivered with different payloads {seen}")
            for token in tokens - {None}:
                assert token is not None
                owners.setdefault(token, []).append(msg_id)
                if token not in self.attempted:
                    unexpected.append(msg_id)
                acked = self.acked.get(msg_id)
                if acked is not None and acked != token:
                    mismatches.append(f"id {msg_id}: acknowledged for {acked}, delivered {token}")
        for token, ids in owners.items():
            if len(ids) > 1:
                mismatches.append(f"token {token} delivered under several ids {ids}")
        counts = Counter(len(seen) for seen in self.delivered.values())
        acked_tokens = set(self.acked.values())
        return Verdict(
            attempted=len(self.attempted),
            acknowledged=len(self.acked),
            delivered=len(self.delivered),
            lost=lost,
            unexpected=sorted(set(unexpected)),
            mismatches=mismatches,
            duplicates=sum((n - 1) * k for n, k in counts.items()),
            redelivered_ids=sum(k for n, k in counts.items() if n > 1),
            recovered=len((set(owners) & self.attempted) - acked_tokens),
        )
