"""Sentences and lines for Status and string attributes: what a scientist reads on a panel."""

from __future__ import annotations

from typing import Any


def ledger_lines(ledger: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for stream in sorted(ledger):
        c = ledger[stream]
        dropped = c.get("dropped") or {}
        drop_total = sum(int(v) for v in dropped.values())
        text = (
            f"{stream}: delivered {c.get('delivered', 0)}, discarded {c.get('discarded', 0)}, "
            f"missing {c.get('missing', 0)}, dropped {drop_total}"
        )
        if dropped:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) + ")"
        if c.get("dropped_slots"):
            text += f", {c['dropped_slots']} lost to dropped messages"
        if c.get("not_received"):
            text += f", not received {c['not_received']} of {c.get('expected', '?')} expected"
            if c.get("not_received_events"):
                text += f" (events {c['not_received_events']})"
        if c.get("redispatched"):
            text += f", sent again {c['redispatched']}"
        lost = c.get("lost") or {}
        if lost:
            text += ", lost " + ", ".join(f"{n} ({why})" for why, n in sorted(lost.items()))
        if c.get("interrupted_at") is not None:
            text += f"; new series after frame {c['interrupted_at']}"
        if c.get("upstream_error"):
            text += f"; upstream: {c['upstream_error']}"
        lines.append(text)
    return lines


def dropped_total(ledger: dict[str, dict[str, Any]]) -> int:
    return sum(int(v) for c in ledger.values() for v in (c.get("dropped") or {}).values())


def missing_total(ledger: dict[str, dict[str, Any]]) -> int:
    return sum(int(c.get("missing", 0) or 0) for c in ledger.values())


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def scan_problems(summary: dict[str, Any]) -> list[str]:
    """What went wrong in a scan, one phrase each (empty when nothing did)."""
    ledger = summary.get("ledger") or {}
    problems = []
    dropped = dropped_total(ledger)
    if dropped:
        problems.append(f"{plural(dropped, 'frame')} dropped")
    missing = missing_total(ledger)
    if missing:
        problems.append(f"{plural(missing, 'frame')} missing (upstream ended early)")
    errors = int(summary.get("worker_errors", 0) or 0)
    if errors:
        problems.append(f"{plural(errors, 'worker error')}")
    rerrors = int(summary.get("reducer_errors", 0) or 0)
    if rerrors:
        problems.append(f"{plural(rerrors, 'reducer error')}")
    if summary.get("last_error") and (errors or rerrors):
        problems.append(f"last error: {summary['last_error']}")
    return problems


def fault_phrases(summary: dict[str, Any], dead: list[str]) -> list[str]:
    """What died, moved, was lost or cut in a scan: one phrase each."""
    out = []
    for name in summary.get("lost_components") or []:
        if name not in (summary.get("rejoined") or []):
            out.append(f"{name} died")
    for name in dead:
        if name not in (summary.get("lost_components") or []):
            out.append(f"{name} stopped answering")
    moved = int(summary.get("redispatched", 0) or 0)
    if moved:
        out.append(f"{plural(moved, 'event')} sent again to live workers")
    for reason, n in sorted((summary.get("lost_events") or {}).items()):
        out.append(f"{n} lost ({reason})")
    for stream, at in sorted((summary.get("interrupted") or {}).items()):
        out.append(f"stream {stream} cut after frame {at} (the upstream started a new series)")
    for stream, why in sorted((summary.get("outages") or {}).items()):
        out.append(f"stream {stream} not connected ({why})")
    return out
