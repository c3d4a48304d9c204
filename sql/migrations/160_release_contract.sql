-- m10: expand
-- The release contract (docs/developing.md "Releases and schema versions"; m10jobs/release.py).
--
-- schema_migrations keeps, per applied migration, the marks a release that has never seen
-- the file needs to judge it: compatible_with, the oldest release that keeps working once
-- it is applied ('0': every release, an expand-only migration; NULL: only releases that
-- ship it), and release, the m10jobs release that applied it (what to install instead).
-- `m10 db migrate` fills both from the file's `-- m10:` header lines.  The jobs' role reads
-- the table at every start (one query), so m10_ops may SELECT it.
--
-- hosts: each host's release, upserted by the runner at most once per run (and written
-- only when it changed or the row is 5 minutes old), so `m10 status` can name hosts whose
-- release is older than the schema wants.  One row per host: small.
ALTER TABLE m10_recovery.schema_migrations
    ADD COLUMN compatible_with text,
    ADD COLUMN release text;
GRANT SELECT ON m10_recovery.schema_migrations TO m10_ops;

CREATE TABLE m10_recovery.hosts (
    host      text PRIMARY KEY,
    release   text NOT NULL,
    requires  text NOT NULL,
    knows     text NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE m10_recovery.hosts OWNER TO m10_ops;
