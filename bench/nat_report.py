"""The benchmark's table: medians per change and the ratios against the baselines."""

from __future__ import annotations

import statistics

from nat_workload import ENGINE_PARALLEL, Rounds, change_count, read_count


# --- report --------------------------------------------------------------------------------
def fmt(v: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def report(n: int, res: Rounds, per_op: dict[str, list[float]], profile: str) -> str:
    ch, rd = change_count(n), read_count(n)
    rows = [
        ("kvmnet agent, open session", "kvmnet"),
        (f"  same, taps deleted {ENGINE_PARALLEL} at once", "kvmnet4"),
        ("one script, one SSH session", "script"),
        ("new SSH connection per cmd", "conn"),
        ("(profile) agent in-process", "inproc"),
    ]
    out = [
        f"== NAT model, {n} taps: {ch} changes (build {5 + 2 * n} + teardown {3 + n}), "
        f"{rd} reads; medians, seconds ==",
        f"{'method':<30}{'rounds':>7}{'create':>9}{'read':>9}{'delete':>9}"
        f"{'changes':>9}{'ms/change':>11}{'ms/read':>9}",
    ]
    for label, key in rows:
        changes, read = res.med(f"{key}.changes"), res.med(f"{key}.read")
        out.append(
            f"{label:<30}{res.count(key + '.changes'):>7}{fmt(res.med(key + '.create')):>9}"
            f"{fmt(read):>9}{fmt(res.med(key + '.delete')):>9}{fmt(changes):>9}"
            f"{fmt(None if changes is None else changes / ch, 1000, 2):>11}"
            f"{fmt(None if read is None else read / rd, 1000, 2):>9}"
        )
    out.append(
        "  'changes' = create + delete phases. kvmnet: sum of call round trips on the open "
        "session.\n  script: wall of the exec (channel open + bash + create + delete), minus "
        "its read phase.\n  connection per command: changes only (reads not run)."
    )
    out.append(
        f"setup (not in 'changes'): kvmnet connect + agent start {fmt(res.med('kvmnet.setup'))} s;"
        f" paramiko connect {fmt(res.med('script.connect'))} s; script channel open + bash start "
        f"{fmt(res.med('script.session'))} s; agent ping round trip "
        f"{fmt(res.med('kvmnet.ping'), 1000, 2)} ms"
    )
    out.append(f"{'pulumi':<30}{'rounds':>7}{'kvmnet':>9}{'noop':>9}{'ratio':>9}")
    for verb in ("up", "destroy"):
        k, z = res.med(f"pulumi.kvmnet.{verb}"), res.med(f"pulumi.noop.{verb}")
        out.append(
            f"{'pulumi ' + verb:<30}{res.count('pulumi.kvmnet.' + verb):>7}{fmt(k, 1, 2):>9}"
            f"{fmt(z, 1, 2):>9}{ratio(k, z):>9}"
        )
    kv, sc, cn = res.med("kvmnet.changes"), res.med("script.changes"), res.med("conn.changes")
    kv_all = None if kv is None else kv + (res.med("kvmnet.read") or 0.0)
    sc_c, sc_d = res.med("script.create"), res.med("script.delete")
    script_phases = None if sc_c is None or sc_d is None else sc_c + sc_d
    out += [
        "ratios:",
        f"  kvmnet / one-session script (changes)      {ratio(kv, sc):>6}   target <= 1.0",
        f"  kvmnet / one-session script (incl. reads)  {ratio(kv_all, res.med('script.total')):>6}",
        f"  kvmnet / script's own phases (no channel open, no bash start)  "
        f"{ratio(kv, script_phases):>6}",
        f"  connection per command / kvmnet (changes)  {ratio(cn, kv):>6}   target >= 20",
        f"  with taps deleted {ENGINE_PARALLEL} at once, as pulumi destroy does:",
        f"    kvmnet / one-session script (changes)    {ratio(res.med('kvmnet4.changes'), sc):>6}",
        f"    connection per command / kvmnet          {ratio(cn, res.med('kvmnet4.changes')):>6}",
        f"  pulumi up kvmnet / noop                    "
        f"{ratio(res.med('pulumi.kvmnet.up'), res.med('pulumi.noop.up')):>6}   target <= 1.3",
        f"  pulumi destroy kvmnet / noop               "
        f"{ratio(res.med('pulumi.kvmnet.destroy'), res.med('pulumi.noop.destroy')):>6}"
        "   target <= 1.3",
        "per agent op, median ms (remote round trip | in-process on the host):",
    ]
    for op in sorted(k for k in per_op if not k.startswith("inproc:")):
        remote = statistics.median(per_op[op])
        local = per_op.get("inproc:" + op)
        out.append(
            f"  {op:<20}{remote * 1000:>8.2f} |"
            f"{statistics.median(local) * 1000 if local else 0:>8.2f}   (x{len(per_op[op])})"
        )
    if profile:
        out += ["in-process cProfile of one extra, untimed round (tottime, top 12):", profile]
    return "\n".join(out)
