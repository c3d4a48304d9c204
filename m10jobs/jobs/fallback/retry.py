"""m10-retry-r2-fallbacks: re-upload what retry_local_fallback() kept (seed:
retry_r2_fallbacks.sh, marker `.uploaded`).

Each entry stands on its own: one whose meta is bad (not JSON, a field of the
wrong type, an absolute or `..` key, a naive timestamp), whose copy is a
symlink or no longer matches its sha256, or whose name is too long for its
marker is logged and left in place, and the others proceed; the pass then exits
1 (65 when nothing else was to be done).  A `.uploaded` marker that does not
parse or does not match the meta is not trusted: the entry is uploaded again.
Per object, the newest version (by version_at) is uploaded (verified against its
sha256 by storage.put_verified) and gets `<name>.uploaded`; older versions, and
versions older than the key's stored note (a direct upload since), are marked
superseded.  The copy stays for retention to remove.

The pass works to a time budget below its unit's timeout ([retry_r2_fallbacks]
time_budget_seconds, derived from the declaration's timeout_seconds): when it runs
out, no further upload starts, those in flight finish and the pass exits 1 with
"N left, continuing next run".  Uploads run concurrent_uploads at a time on one S3
client (boto3 clients are thread-safe); the main thread alone takes the safe points
(SIGTERM, the lease) between items, and the upload threads write the markers, so an
upload that finished is never lost to a stop.  A stop waits STOP_GRACE_S for the uploads
in flight, no longer: one stuck on a dead endpoint (boto3's timeouts and retries take a
minute and more) is abandoned unrecorded, and the next pass uploads it again.  Store
unreachable -> 69 (attempt counted); files still failing after `alert_after_hours` -> exit 1.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from m10jobs.edges import fallback, files, storage
from m10jobs.errors import BadInput, DependencyUnavailable, TaskFailed, some_refused
from m10jobs.jobs.fallback.settings import RetrySettings
from m10jobs.runner import as_m10_error

if TYPE_CHECKING:
    from m10jobs.runner import PassContext

WAIT_S = 0.2
STOP_GRACE_S = 2.0
"""How often the main thread reaches a safe point while uploads are in flight."""


@dataclass
class Version:
    checked: fallback.Checked
    at: datetime
    pending: bool  # no marker, or one that cannot be trusted

    @property
    def entry(self) -> fallback.Entry:
        return self.checked.entry


@dataclass
class Group:
    """One object's versions, oldest first, and when it was last stored directly."""

    bucket: str
    key: str
    versions: list[Version]
    stored: dict[str, Any] | None = None

    @property
    def pending(self) -> list[Version]:
        return [v for v in self.versions if v.pending]


@dataclass
class Settled:
    """What one group's upload thread did."""

    group: Group
    uploaded: Version | None = None
    verified_by: str = ""
    superseded: list[Version] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    failed: tuple[Version, BaseException] | None = None


@dataclass
class Pass:
    """What the pass knows, kept for the gauge whatever way it ends."""

    waiting: dict[Path, dict[str, Any]] = field(default_factory=dict)  # pending: meta


def retry_pass(ctx: PassContext) -> dict[str, Any]:
    """One pass; whatever its outcome, the age of the oldest upload still pending after it
    (what the M10FallbackUploadsPending alert watches)."""
    state = Pass()
    try:
        return _retry(ctx, state)
    finally:
        ages = [fallback.age_hours(meta) * 3600 for meta in state.waiting.values()]
        ctx.gauge(
            "m10_fallback_oldest_pending_age_seconds",
            max(ages, default=0),
            "Time since the oldest still pending fallback upload first failed.",
        )


def _scan(ctx: PassContext, directory: Path, state: Pass) -> tuple[list[Group], list[str]]:
    """Every committed entry's meta and marker (not its file: the upload threads read
    that), grouped per object; the refused ones as messages."""
    bad: list[str] = []
    versions: dict[tuple[str, str], list[Version]] = {}
    for entry in fallback.entries(directory):
        ctx.check()
        try:
            checked = fallback.validate_meta(entry)
        except BadInput as exc:
            if fallback.marker_problem(entry, check_file=False) is None:
                continue  # verified upload: retention's business
            bad.append(str(exc))
            ctx.log.error("%s", exc)
            continue
        pending = True
        if os.path.lexists(entry.uploaded_path):
            problem = fallback.marker_problem(entry, checked.meta, check_file=False)
            pending = problem is not None
            if pending:
                ctx.log.warning("%s; the upload is verified again", problem)
        m = checked.meta
        version = Version(checked, fallback.version_at(entry, m), pending)
        versions.setdefault((m["bucket"], m["key"]), []).append(version)
        if pending:
            state.waiting[entry.path] = m
    groups = []
    for (bucket, key), found in versions.items():
        if not any(v.pending for v in found):
            continue
        try:
            stored = fallback.read_stored_note(directory, bucket, key)
        except BadInput as exc:
            bad.append(str(exc))
            ctx.log.error("%s", exc)
            continue
        found.sort(key=lambda v: (v.at, v.entry.path.name))
        groups.append(Group(bucket, key, found, stored))
    # Oldest first: the backlog drains in the order it piled up.
    groups.sort(key=lambda g: min(v.at for v in g.pending))
    return groups, bad


def _settle(client: Any, group: Group) -> Settled:
    """In an upload thread: upload the group's newest good version (unless something
    newer is stored already) and mark the older ones superseded."""
    out = Settled(group)
    stored_at = datetime.fromisoformat(group.stored["stored_at"]) if group.stored else None
    winner_sha: str | None = None
    older: list[Version] = []
    for i in range(len(group.versions) - 1, -1, -1):
        v = group.versions[i]
        if stored_at is not None and v.at < stored_at:
            assert group.stored is not None
            winner_sha, older = group.stored["sha256"], group.versions[: i + 1]
            break
        if not v.pending:
            winner_sha, older = v.checked.meta["sha256"], group.versions[:i]
            break
        try:
            fallback.check_file(v.checked)
        except BadInput as exc:
            out.bad.append(str(exc))
            continue
        m = v.checked.meta
        try:
            stored = storage.put_verified(
                client,
                group.bucket,
                group.key,
                v.entry.path,
                m["sha256"],
                m["size"],
                m.get("content_type") or "application/octet-stream",
            )
        except (BotoCoreError, ClientError, storage.StoredMismatch) as exc:
            out.failed = (v, exc)
            return out
        fallback.mark_uploaded(v.entry, m, stored.etag)
        out.uploaded, out.verified_by = v, stored.verified_by
        winner_sha, older = m["sha256"], group.versions[:i]
        break
    if winner_sha is not None:
        for v in older:
            if v.pending:
                fallback.mark_superseded(v.entry, v.checked.meta, winner_sha)
                out.superseded.append(v)
    return out


@dataclass
class Totals:
    uploaded: int = 0
    superseded: int = 0
    failed: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    unreachable: BaseException | None = None


def _record(
    ctx: PassContext, s: Settled, state: Pass, totals: Totals, bad: list[str], alert_after: float
) -> None:
    """In the main thread: count and log what a group's thread did, and count a failed
    attempt in its meta (under the directory lock, as the writer does)."""
    for message in s.bad:
        bad.append(message)
        ctx.log.error("%s", message)
    for v in s.superseded:
        state.waiting.pop(v.entry.path, None)
    totals.superseded += len(s.superseded)
    if s.uploaded is not None:
        state.waiting.pop(s.uploaded.entry.path, None)
        totals.uploaded += 1
        ctx.log.info(
            "uploaded %s to s3://%s/%s (verified by %s)",
            s.uploaded.entry.path.name,
            s.group.bucket,
            s.group.key,
            s.verified_by,
        )
    if s.failed is None:
        return
    v, exc = s.failed
    meta = fallback.record_failure(v.entry, f"{type(exc).__name__}: {exc}")
    known = as_m10_error(exc, None)
    if isinstance(known, DependencyUnavailable):
        totals.unreachable = totals.unreachable or known
        return
    ctx.log.error(
        "retry of %s to s3://%s/%s failed (attempt %d): %s",
        v.entry.path,
        s.group.bucket,
        s.group.key,
        meta["attempts"],
        exc,
    )
    totals.failed.append(s.group.key)
    if fallback.age_hours(meta) >= alert_after:
        totals.stuck.append(v.entry.path.name)


def _retry(ctx: PassContext, state: Pass) -> dict[str, Any]:
    t0 = time.monotonic()
    s = ctx.config.settings(RetrySettings)
    ttl = ctx.lease.ttl if ctx.lease else ctx.config.lease_ttl_seconds
    deadline = t0 + s.budget(ttl, ctx.job.timeout_seconds)
    directory = fallback.fallback_dir(ctx.config)
    if not ctx.dry_run:
        fallback.remove_temps(directory)
    groups, bad = _scan(ctx, directory, state)
    todo = len(state.waiting)
    # Gauges from what is on disk now, so they stay set until the entries are fixed.
    ctx.gauge(
        "m10_fallback_bad_entries",
        len(bad),
        "Fallback entries refused (bad meta, file or name); fix or move them.",
    )
    ctx.gauge("m10_fallback_pending", todo, "Fallback uploads waiting for a retry.")
    if ctx.dry_run:
        return {
            "pending": todo,
            "bad": len(bad),
            "would_upload": [
                v.checked.meta["key"] for g in groups for v in g.versions if v.pending
            ],
        }

    totals = Totals()
    left = _run(ctx, s, groups, deadline, state, totals, bad)
    ctx.gauge("m10_fallback_uploaded", totals.uploaded, "Fallback files uploaded by the last pass.")
    summary: dict[str, Any] = {"pending": todo, "uploaded": totals.uploaded}
    if totals.failed:
        summary["failed"] = totals.failed
    if totals.superseded:
        summary["superseded"] = totals.superseded
    if bad:
        summary["bad"] = len(bad)
    if left:
        summary["left"] = left
    if totals.unreachable is not None:
        raise DependencyUnavailable(
            f"{totals.unreachable}; {len(state.waiting)} fallback file(s) still pending"
        ) from None
    _forget_stored_notes(directory, state, t0)
    alert_after = s.alert_after_hours
    if totals.stuck:
        raise TaskFailed(
            f"{len(totals.stuck)} fallback file(s) have kept failing for over "
            f"{alert_after:g} h ({', '.join(totals.stuck)}); check the bucket and "
            "credentials, then rerun m10-retry-r2-fallbacks"
        )
    if left:
        raise TaskFailed(
            f"time budget used up: {left} fallback upload(s) left, continuing next run",
            summary,
        )
    if bad:
        raise some_refused(
            f"{len(bad)} fallback entr{'y' if len(bad) == 1 else 'ies'} refused and left in "
            f"place ({bad[0]})",
            summary,
            nothing="nothing else to upload",
            others=f"the {totals.uploaded} valid one(s) were uploaded"
            if totals.uploaded or totals.superseded
            else None,
        )
    if totals.failed:
        ctx.log.warning("%d fallback upload(s) failed; they stay pending", len(totals.failed))
    return summary


def _run(
    ctx: PassContext,
    s: RetrySettings,
    groups: list[Group],
    deadline: float,
    state: Pass,
    totals: Totals,
    bad: list[str],
) -> int:
    """Settle the groups, concurrent_uploads at a time, until done, out of time (after
    one wave at least), the
    store unreachable, or a safe point says stop (raised once the uploads in flight
    have finished and been recorded).  How many groups were not started."""
    if not groups:
        return 0
    client = storage.client(ctx.config)
    queue = iter(groups)
    started = 0
    inflight: set[Future[Settled]] = set()
    stop: BaseException | None = None
    stop_at = 0.0
    pool = ThreadPoolExecutor(s.concurrent_uploads, thread_name_prefix="upload")
    try:
        while True:
            try:
                ctx.check()  # a safe point: SIGTERM, a lost lease
            except BaseException as exc:  # re-raised once the uploads in flight are recorded
                if stop is None:
                    stop, stop_at = exc, time.monotonic()
            full = len(inflight) >= s.concurrent_uploads
            # One upload per thread at least, so that every pass makes progress.
            out_of_time = started >= s.concurrent_uploads and time.monotonic() >= deadline
            while not (stop or full or out_of_time or totals.unreachable) and started < len(groups):
                inflight.add(pool.submit(_settle, client, next(queue)))
                started += 1
                full = len(inflight) >= s.concurrent_uploads
            if not inflight:
                break
            grace = STOP_GRACE_S if stop is not None else WAIT_S
            done, inflight = wait(inflight, timeout=grace, return_when=FIRST_COMPLETED)
            for future in done:
                _record(ctx, future.result(), state, totals, bad, s.alert_after_hours)
            if stop is not None and time.monotonic() - stop_at >= STOP_GRACE_S:
                break  # what is still in flight is abandoned: the next pass uploads it
    finally:  # never wait for an abandoned upload (the runner ends the process by its signal)
        pool.shutdown(wait=stop is None, cancel_futures=True)
    if stop is not None:
        raise stop
    return 0 if totals.unreachable else len(groups) - started


def _forget_stored_notes(directory: Path, state: Pass, t0: float) -> None:
    """Stored notes no pending version needs any more: those of keys with nothing
    pending after this pass, written before it began (a version kept after the pass's
    scan is newer than such a note, so the note cannot matter to it)."""
    still = {(m["bucket"], m["key"]) for m in state.waiting.values()}
    began = time.time() - (time.monotonic() - t0)
    needed = {fallback.stored_note_path(directory, *k).name for k in still}
    for note in fallback.stored_notes(directory):
        try:
            if note.name in needed or note.lstat().st_mtime >= began:
                continue
            with files.file_lock(note):
                note.unlink()
        except FileNotFoundError:
            pass
