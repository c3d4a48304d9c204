"""Health of the canary (`m10 status`, ARTIFACTS): this host's latest report, its age
and verdict; on a failing verdict the probes that failed and what rollback did about
that report (the rollback ledger, cluster-wide; read when the database is up)."""

from __future__ import annotations

from typing import Any

from m10jobs.health import Checks, Status, human, runs_recorded

checks = Checks()


@checks("artifacts")
def check_canary(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.errors import BadInput
    from m10jobs.jobs.canary import report as cr
    from m10jobs.jobs.canary.settings import RollbackSettings

    path = cr.latest_path(config.state_dir)
    max_age = config.settings(RollbackSettings).max_report_age_s
    info: dict[str, Any] = {"report": str(path)}
    st.artifacts["canary"] = info
    elsewhere = st.elsewhere("m10-canary", runs_recorded(config))
    if elsewhere:
        info["elsewhere"] = elsewhere
    try:
        report = cr.load(path)
    except BadInput as exc:
        info["verdict"] = "unreadable"
        st.red(
            "canary-stale",
            f"canary report unreadable: {exc}",
            "m10-canary   (writes a fresh report)",
        )
        return
    if report is None:
        info["verdict"] = None
        if not elsewhere:
            st.red("canary-stale", f"no canary report at {path}", "m10-canary")
        return
    age = st.now - report.finished_at.timestamp()
    info.update(
        verdict=report.verdict, score=report.score, age_s=round(age, 1), run_id=report.run_id
    )
    if age > max_age and not elsewhere:
        st.red(
            "canary-stale",
            f"canary report is {human(age)} old (> rollback "
            f"max_report_age_s {max_age:g}): rollback will not act on it",
            "systemctl status m10-canary.timer; m10-canary",
        )
    if report.verdict in ("fail", "inconclusive"):
        failing = [p for p in report.raw["probes"] if p.get("status") != "pass"]
        info["failing_probes"] = [
            {k: p.get(k) for k in ("name", "status", "detail", "critical")} for p in failing
        ]
        probes = "; ".join(
            f"{p.get('name')} {p.get('status')}" + (f" ({p['detail']})" if p.get("detail") else "")
            for p in failing
        )
        acted = rollback_action(conn, report.run_id) if conn is not None else None
        info["rollback"] = acted
        st.red(
            "canary-failing",
            f"canary verdict {report.verdict} (score {report.score})"
            + (f"; failing probe(s): {probes}" if probes else "")
            + f"; rollback: {_rollback_text(acted, conn is not None)}",
            "fix what the failing probes name (m10 canary status shows each probe); "
            "if rollback did not act and it is needed: act by hand",
        )


def rollback_action(conn: Any, report_run_id: str) -> dict[str, Any] | None:
    """The rollback ledger's row of one report (cluster-wide: whichever host acted), with
    its age by the database clock; None: rollback has not acted on it."""
    from m10jobs.edges.queries import query

    row = conn.execute(query("rollback_action"), {"report_run_id": report_run_id}).fetchone()
    if row is None:
        return None
    return {k: row[k] for k in ("host", "command", "set_flags", "outcome", "exit_status")} | {
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


def _rollback_text(acted: dict[str, Any] | None, known: bool) -> str:
    if not known:
        return "unknown (database unreachable)"
    if acted is None:
        return "has not acted on this report"
    when = acted["started_at"].isoformat(timespec="seconds")
    did = " and ".join(
        what
        for what, done in (
            ("ran its command", acted["command"]),
            ("set flags " + ", ".join(sorted(acted["set_flags"] or {})), acted["set_flags"]),
        )
        if done
    )
    outcome = acted["outcome"] or "still running (or killed: no outcome recorded)"
    code = f", exit {acted['exit_status']}" if acted["exit_status"] is not None else ""
    return f"acted on {acted['host']} at {when} ({did or 'acted'}): {outcome}{code}"
