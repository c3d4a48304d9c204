"""m10-retry-r2-fallbacks: re-upload what retry_local_fallback() kept (seed:
retry_r2_fallbacks.sh, marker `.uploaded`).

Each entry stands on its own: one whose meta is bad (not JSON, a field of the
wrong type, an absolute or `..` key, a naive timestamp), whose copy is a
symlink or no longer matches its sha256, or whose name is too long for its
marker is logged and left in place, and the others proceed; the pass then exits
1 (65 when nothing else was to be done).  A `.uploaded` marker that does not
parse or does not match the meta and the file is not trusted: the entry is
uploaded again.  Per object, the newest version is uploaded (verified against
its sha256 by storage.put_verified) and gets `<name>.uploaded`; older versions are
marked superseded.  The copy stays for retention to remove.  Store unreachable
-> 69 (attempt counted); files still failing after `[retry_r2_fallbacks]
alert_after_hours` -> exit 1.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from m10jobs.edges import fallback, storage
from m10jobs.errors import BadInput, DependencyUnavailable, TaskFailed, some_refused
from m10jobs.jobs.fallback.settings import RetrySettings
from m10jobs.runner import as_m10_error

if TYPE_CHECKING:
    from m10jobs.runner import PassContext


def retry_pass(ctx: PassContext) -> dict[str, Any]:
    """One pass; whatever its outcome, the age of the oldest upload still pending after it
    (what the M10FallbackUploadsPending alert watches)."""
    try:
        return _retry(ctx)
    finally:
        ages = [
            fallback.age_hours(meta) * 3600
            for entry in fallback.pending(fallback.fallback_dir(ctx.config))
            if (meta := entry.read_meta_or_none()) is not None
        ]
        ctx.gauge(
            "m10_fallback_oldest_pending_age_seconds",
            max(ages, default=0),
            "Time since the oldest still pending fallback upload first failed.",
        )


def _retry(ctx: PassContext) -> dict[str, Any]:
    alert_after = ctx.config.settings(RetrySettings).alert_after_hours
    directory = fallback.fallback_dir(ctx.config)
    bad: list[str] = []
    verified: list[fallback.Checked] = []
    todo: list[fallback.Checked] = []  # no marker, or one that cannot be trusted
    for entry in fallback.entries(directory):
        ctx.check()
        try:
            checked = fallback.validate(entry)
        except BadInput as exc:
            if fallback.marker_problem(entry) is None:
                continue  # verified upload whose copy changed since: retention's business
            bad.append(str(exc))
            ctx.log.error("%s", exc)
            continue
        if os.path.lexists(entry.uploaded_path):
            problem = fallback.marker_problem(entry, checked.meta)
            if problem is None:
                verified.append(checked)
                continue
            ctx.log.warning("%s; the upload is verified again", problem)
        todo.append(checked)
    # Gauges from what is on disk now, so they stay set until the entries are fixed.
    ctx.gauge(
        "m10_fallback_bad_entries",
        len(bad),
        "Fallback entries refused (bad meta, file or name); fix or move them.",
    )
    ctx.gauge("m10_fallback_pending", len(todo), "Fallback uploads waiting for a retry.")
    if ctx.dry_run:
        return {
            "pending": len(todo),
            "bad": len(bad),
            "would_upload": [c.meta["key"] for c in todo],
        }

    # Per object, only the newest version is uploaded; older ones are marked
    # superseded, never written over newer content.
    groups: dict[tuple[str, str], list[fallback.Checked]] = {}
    for c in sorted([*verified, *todo], key=lambda c: c.entry.path.name):
        groups.setdefault((c.meta["bucket"], c.meta["key"]), []).append(c)
    waiting = {id(c) for c in todo}
    client = storage.client(ctx.config) if todo else None
    uploaded, superseded, failed, stuck = [], [], [], []
    for (bucket, key), versions in groups.items():
        ctx.check()
        newest = versions[-1]
        m = newest.meta
        if id(newest) in waiting:
            try:
                stored = storage.put_verified(
                    client,
                    bucket,
                    key,
                    newest.entry.path,
                    m["sha256"],
                    m["size"],
                    m.get("content_type") or "application/octet-stream",
                )
            except (BotoCoreError, ClientError, storage.StoredMismatch) as exc:
                meta = fallback.record_failure(newest.entry, f"{type(exc).__name__}: {exc}")
                known = as_m10_error(exc, None)
                if isinstance(known, DependencyUnavailable):
                    raise DependencyUnavailable(
                        f"{known}; {len(todo) - len(uploaded)} fallback file(s) still pending"
                    ) from None
                ctx.log.error(
                    "retry of %s to s3://%s/%s failed (attempt %d): %s",
                    newest.entry.path,
                    bucket,
                    key,
                    meta["attempts"],
                    exc,
                )
                failed.append(key)
                if fallback.age_hours(meta) >= alert_after:
                    stuck.append(newest.entry.path.name)
                continue
            fallback.mark_uploaded(newest.entry, m, stored.etag)
            uploaded.append(key)
            ctx.log.info(
                "uploaded %s to s3://%s/%s (verified by %s)",
                newest.entry.path.name,
                bucket,
                key,
                stored.verified_by,
            )
        for older in versions[:-1]:
            if id(older) in waiting:
                fallback.mark_superseded(older.entry, older.meta, m["sha256"])
                superseded.append(older.entry.path.name)
    ctx.gauge("m10_fallback_uploaded", len(uploaded), "Fallback files uploaded by the last pass.")
    summary: dict[str, Any] = {"pending": len(todo), "uploaded": len(uploaded)}
    if failed:
        summary["failed"] = failed
    if superseded:
        summary["superseded"] = len(superseded)
    if bad:
        summary["bad"] = len(bad)
    if stuck:
        raise TaskFailed(
            f"{len(stuck)} fallback file(s) have kept failing for over "
            f"{alert_after:g} h ({', '.join(stuck)}); check the bucket and "
            "credentials, then rerun m10-retry-r2-fallbacks"
        )
    if bad:
        raise some_refused(
            f"{len(bad)} fallback entr{'y' if len(bad) == 1 else 'ies'} refused and left in "
            f"place ({bad[0]})",
            summary,
            nothing="nothing else to upload",
            others=f"the {len(uploaded)} valid one(s) were uploaded"
            if uploaded or superseded
            else None,
        )
    if failed:
        ctx.log.warning("%d fallback upload(s) failed; they stay pending", len(failed))
    return summary
