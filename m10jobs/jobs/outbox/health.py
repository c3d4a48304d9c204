"""Health of the outbox pipeline (`m10 status`, PIPELINE): backlog, last publish, and
the dead letters it leaves for dl_reconcile."""

from __future__ import annotations

from typing import Any

from m10jobs.health import Checks, Status, human

DL_RECONCILE_LATE_S = 3600
"""Dead letters waiting longer than this for dl_reconcile are red."""

checks = Checks()


@checks("pipeline", database=True)
def check_pipeline(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.edges.queries import query
    from m10jobs.jobs.maintenance.settings import MaintenanceSettings

    stale_after = config.settings(MaintenanceSettings).outbox_stale_seconds
    ob = conn.execute(query("status_outbox")).fetchone()
    st.pipeline["outbox"] = ob
    if ob["pending"] and (ob["oldest_pending_age_s"] or 0) > stale_after:
        last = ob["last_publish_age_s"]
        st.red(
            "outbox-backlog",
            f"outbox backlog: {ob['pending']} pending, oldest "
            f"{human(ob['oldest_pending_age_s'])} (> outbox_stale_seconds "
            f"{stale_after}); last publish {human(last) + ' ago' if last else 'never'}",
            "m10 outbox status; journalctl -u m10-outbox-processor.service -n 50 -o cat",
        )
    dl = conn.execute(query("status_dead_letters")).fetchone()
    st.pipeline["dead_letters"] = dl
    if dl["abandoned"]:
        st.red(
            "dl-abandoned",
            f"{dl['abandoned']} dead letter(s) abandoned by dl_reconcile "
            f"(first id {dl['first_abandoned_id']}): nobody replayed or discarded them yet",
            "m10 dl list --outcome abandoned; fix the cause, then m10 dl replay ID (or "
            "--outcome abandoned), or settle one that cannot be replayed with "
            "m10 dl discard ID --reason TEXT",
        )
    if dl["pending"] and (dl["oldest_pending_age_s"] or 0) > DL_RECONCILE_LATE_S:
        st.red(
            "dl-unreconciled",
            f"{dl['pending']} dead letter(s) wait for reconcile, oldest "
            f"{human(dl['oldest_pending_age_s'])}",
            "m10 run dl_reconcile --verbose",
        )
