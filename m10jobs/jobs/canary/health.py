"""Health of the canary (`m10 status`, ARTIFACTS): this host's latest report, its age
and verdict."""

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
        st.red(
            "canary-failing",
            f"canary verdict {report.verdict} (score {report.score})",
            "m10 canary status   (failing probes, and what rollback did)",
        )
