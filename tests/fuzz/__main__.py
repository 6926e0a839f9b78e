"""``python -m tests.fuzz --cases 5000``: the long fuzz run, one table line per protocol.

Exit status 0 when no exception escaped any framer (or ``parse``), 1 otherwise (each kind of
escape is shown once with its traceback), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tests.fuzz.corpus import protocol_names
from tests.fuzz.harness import Tally, fuzz_protocol


def _reasons(tally: Tally, top: int) -> list[str]:
    ranked = tally.drops.most_common()
    lines = [f"{n:>8}  {reason[:90]}" for reason, n in ranked[:top]]
    if len(ranked) > top:
        rest = sum(n for _, n in ranked[top:])
        lines.append(f"{rest:>8}  ({len(ranked) - top} more reasons)")
    return lines


def _table(tallies: Sequence[Tally], top: int) -> str:
    head = (
        f"{'protocol':<16}{'seeds':>6}{'cases':>8}{'events':>8}{'dropped':>9}"
        f"{'parse err':>10}{'escaped':>9}{'seconds':>9}"
    )
    out = [head, "-" * len(head)]
    for t in tallies:
        seeds = f"{t.seeds}{'' if t.from_captures else '*'}"
        out.append(
            f"{t.typ:<16}{seeds:>6}{t.cases:>8}{t.events:>8}{sum(t.drops.values()):>9}"
            f"{t.parse_errors:>10}{len(t.escapes):>9}{t.seconds:>9.1f}"
        )
    out.append("(* no capture seeds: builder output only)")
    for t in tallies:
        out += ["", f"{t.typ}: drops by reason"]
        out += _reasons(t, top) or ["       0"]
        if t.escapes:
            out.append(f"{t.typ}: exceptions")
            out += [f"{n:>8}  {kind}" for kind, n in t.exception_types.most_common()]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=5000, help="cases per protocol")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (repeatable)")
    parser.add_argument(
        "--protocol", action="append", help="only this protocol (repeatable; default all)"
    )
    parser.add_argument("--no-captures", action="store_true", help="builder seeds only")
    parser.add_argument("--top", type=int, default=8, help="drop reasons shown per protocol")
    args = parser.parse_args(argv)
    names = protocol_names()
    chosen = args.protocol or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown protocol(s) {', '.join(unknown)}; known: {', '.join(names)}")
    tallies = []
    for typ in chosen:
        print(f"fuzzing {typ} ...", file=sys.stderr, flush=True)
        tally = fuzz_protocol(typ, args.cases, seed=args.seed, use_captures=not args.no_captures)
        tallies.append(tally)
    print(_table(tallies, args.top))
    shown: set[tuple[str, str]] = set()
    for tally in tallies:
        for escape in tally.escapes:
            key = (escape.where, type(escape.error).__name__)
            if key not in shown:
                shown.add(key)
                print("\n" + escape.describe(), file=sys.stderr)
    return 1 if any(t.escapes for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
