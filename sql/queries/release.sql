-- The release contract (m10jobs/release.py): the schema version a release checks at every
-- start, the marks `m10 db migrate` keeps per migration, and each host's release.

-- schema_version --
-- The schema version (newest applied migration) and every applied migration newer than
-- %(known)s with its marks: the release gate's one query.  to_jsonb(m) reads the marks of
-- a schema before 160, which has none, as absent instead of failing.
SELECT (SELECT max(version) FROM m10_recovery.schema_migrations) AS version,
       coalesce((SELECT jsonb_agg(to_jsonb(m) - 'checksum' - 'applied_at' ORDER BY m.version)
                   FROM m10_recovery.schema_migrations AS m
                  WHERE left(m.version, 3) > %(known)s), '[]'::jsonb) AS newer;

-- migration_marks_exist --
-- Whether schema_migrations has the mark columns (migration 160 adds them).
SELECT EXISTS (SELECT FROM pg_attribute
                WHERE attrelid = 'm10_recovery.schema_migrations'::regclass
                  AND attname = 'compatible_with' AND NOT attisdropped) AS e;

-- stamp_migration_marks --
-- Each known migration's compatible_with as its file's header says; release for the ones
-- this run applied.
UPDATE m10_recovery.schema_migrations AS s
   SET compatible_with = m.compatible_with,
       release = CASE WHEN s.version = ANY(%(applied)s::text[]) THEN %(release)s
                      ELSE s.release END
  FROM unnest(%(versions)s::text[], %(compatible)s::text[]) AS m(version, compatible_with)
 WHERE s.version = m.version
   AND (s.compatible_with IS DISTINCT FROM m.compatible_with
        OR (s.version = ANY(%(applied)s::text[]) AND s.release IS DISTINCT FROM %(release)s));

-- host_seen --
-- This host runs this release: written when the release changed or the row is 5 minutes
-- old, so most runs only read the row (one small table, one row per host).
INSERT INTO m10_recovery.hosts AS h (host, release, requires, knows)
VALUES (%(host)s, %(release)s, %(requires)s, %(knows)s)
ON CONFLICT (host) DO UPDATE
   SET release = excluded.release, requires = excluded.requires, knows = excluded.knows,
       seen_at = now()
 WHERE (h.release, h.requires, h.knows) IS DISTINCT FROM
       (excluded.release, excluded.requires, excluded.knows)
    OR h.seen_at < now() - interval '5 minutes';

-- status_hosts --
-- Every host that recorded its release, newest sighting first, with its age by the
-- database clock.
SELECT host, release, requires, knows, seen_at,
       extract(epoch FROM now() - seen_at)::float8 AS age_s
  FROM m10_recovery.hosts
 ORDER BY seen_at DESC;

-- status_schema_migrations --
-- Every applied migration with its marks (m10 status, m10 db status: a few dozen rows).
SELECT version, to_jsonb(m) ->> 'compatible_with' AS compatible_with,
       to_jsonb(m) ->> 'release' AS release, applied_at
  FROM m10_recovery.schema_migrations AS m
 ORDER BY version;
