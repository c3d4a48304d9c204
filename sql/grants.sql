-- The access policy, re-applied after every `m10 db migrate` (idempotent), so
-- objects a later migration created, by whichever role ran it, follow it too.
-- m10_ops owns; m10_app may only EXECUTE enqueue_outbox; PUBLIC has nothing.

REVOKE ALL ON SCHEMA m10_recovery FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA m10_recovery FROM PUBLIC, m10_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA m10_recovery FROM PUBLIC, m10_app;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA m10_recovery FROM PUBLIC, m10_app;
GRANT USAGE ON SCHEMA m10_recovery TO m10_app;
GRANT EXECUTE ON FUNCTION
    m10_recovery.enqueue_outbox(text, jsonb, text, text, text) TO m10_app;
