-- Audit queries of `m10 flows --check` (m10jobs/audit.py): each returns the breaches
-- of one isolation property; no rows = the property holds.

-- audit_app_privileges --
-- What role m10_app may do in m10_recovery beyond EXECUTE on enqueue_outbox.
SELECT c.oid::regclass::text AS obj, p.priv FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) AS p(priv)
 WHERE n.nspname = 'm10_recovery' AND c.relkind IN ('r','v','m','p')
   AND has_table_privilege('m10_app', c.oid, p.priv)
UNION ALL
SELECT p.oid::regprocedure::text, 'EXECUTE' FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'm10_recovery' AND p.proname <> 'enqueue_outbox'
   AND has_function_privilege('m10_app', p.oid, 'EXECUTE');

-- audit_lock_table_grants --
-- Privileges on distributed_locks held by anyone but its owner.
SELECT coalesce(nullif(g.grantee::regrole::text, '-'), 'PUBLIC') AS grantee,
       g.privilege_type
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) g
 WHERE c.oid = 'm10_recovery.distributed_locks'::regclass
   AND g.grantee <> c.relowner;

-- audit_public_privileges --
-- Whatever PUBLIC holds on the schema, its tables and sequences, its functions.
SELECT 'schema m10_recovery' AS obj, g.privilege_type AS priv
  FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) g
 WHERE n.nspname = 'm10_recovery' AND g.grantee = 0
UNION ALL
SELECT c.oid::regclass::text, g.privilege_type
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       aclexplode(coalesce(c.relacl, acldefault(
           CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) g
 WHERE n.nspname = 'm10_recovery' AND g.grantee = 0
UNION ALL
SELECT p.oid::regprocedure::text, g.privilege_type
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
       aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) g
 WHERE n.nspname = 'm10_recovery' AND g.grantee = 0;

-- audit_lock_rows --
-- Every lease row's name and holder (names are matched against the registry in Python).
SELECT lock_name, holder_id FROM m10_recovery.distributed_locks;
