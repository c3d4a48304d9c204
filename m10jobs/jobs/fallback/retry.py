"""m10-retry-r2-fallbacks: re-upload what retry_local_fallback() kept (seed:
retry_r2_fallbacks.sh, marker `.uploaded`).

Every pending fallback is validated before anything is uploaded: a meta file
with an absolute or `..` key, or a copy whose sha256 no longer matches, stops
the pass with exit 65 and nothing is touched.  Then, oldest first, the newest
pending version of each object: upload verified against its sha256
(storage.put_verified: the store checks the checksum sent with it; read back
where a store lacks checksums), write `<name>.uploaded` (older versions of
that object: `.uploaded`, superseded).  The copy stays for retention to
remove.  Store unreachable -> 69 (attempt counted); files still failing
after `[retry_r2_fallbacks] alert_after_hours` -> exit 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from m10jobs.edges import fallback, storage
from m10jobs.errors import BadInput, DependencyUnavailable, TaskFailed
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
        ages = [fallback.age_hours(meta) * 3600
                for entry in fallback.pending(fallback.fallback_dir(ctx.config))
                if (meta := entry.read_meta_or_none()) is not None]
        ctx.gauge("m10_fallback_oldest_pending_age_seconds", max(ages, default=0),
                  "Time since the oldest still pending fallback upload first failed.")


def _retry(ctx: PassContext) -> dict[str, Any]:
    alert_after = ctx.config.settings(RetrySettings).alert_after_hours
    directory = fallback.fallback_dir(ctx.config)
    entries = fallback.pending(directory)
    problems = []
    checked = []
    for entry in entries:
        try:
            checked.append(fallback.validate(entry))
        except BadInput as exc:
            problems.append(str(exc))
    if problems:
        for p in problems:
            ctx.log.error("%s", p)
        raise BadInput(f"{len(problems)} fallback file(s) refused, nothing uploaded: "
                       f"{problems[0]}")
    ctx.gauge("m10_fallback_pending", len(checked), "Fallback uploads waiting for a retry.")
    if ctx.dry_run:
        return {"pending": len(checked), "would_upload": [c.meta["key"] for c in checked]}
    if not checked:
        return {"pending": 0, "uploaded": 0}

    # Only the newest pending version of each object is uploaded; older ones
    # are then marked superseded (never written over newer content).
    newest = {(c.meta["bucket"], c.meta["key"]): c for c in checked}
    client = storage.client(ctx.config)
    uploaded, failed, stuck = [], [], []
    for c in newest.values():
        ctx.check()
        m = c.meta
        try:
            stored = storage.put_verified(client, m["bucket"], m["key"], c.entry.path,
                                          m["sha256"], m["size"],
                                          m.get("content_type") or "application/octet-stream")
        except (BotoCoreError, ClientError, storage.StoredMismatch) as exc:
            meta = fallback.record_failure(c.entry, f"{type(exc).__name__}: {exc}")
            known = as_m10_error(exc, None)
            if isinstance(known, DependencyUnavailable):
                raise DependencyUnavailable(
                    f"{known}; {len(newest) - len(uploaded)} fallback file(s) still pending"
                ) from None
            ctx.log.error("retry of %s to s3://%s/%s failed (attempt %d): %s", c.entry.path,
                          m["bucket"], m["key"], meta["attempts"], exc)
            failed.append(m["key"])
            if fallback.age_hours(meta) >= alert_after:
                stuck.append(c.entry.path.name)
            continue
        fallback.mark_uploaded(c.entry, m, stored.etag)
        fallback.supersede(directory, m["bucket"], m["key"], m["sha256"], keep=c.entry)
        uploaded.append(m["key"])
        ctx.log.info("uploaded %s to s3://%s/%s (verified by %s)", c.entry.path.name,
                     m["bucket"], m["key"], stored.verified_by)
    ctx.gauge("m10_fallback_uploaded", len(uploaded), "Fallback files uploaded by the last pass.")
    summary = {"pending": len(checked), "uploaded": len(uploaded), "failed": failed}
    if stuck:
        raise TaskFailed(f"{len(stuck)} fallback file(s) have kept failing for over "
                         f"{alert_after:g} h ({', '.join(stuck)}); check the bucket and "
                         "credentials, then rerun m10-retry-r2-fallbacks")
    if failed:
        ctx.log.warning("%d fallback upload(s) failed; they stay pending", len(failed))
    return summary
