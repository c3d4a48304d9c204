-- The server behind M10_DATABASE_URL, as the runner checks it at pass start.

-- db_is_standby --
-- Whether the server that answered is read-only (a standby, or a demoted primary):
-- checked at pass start, before anything is written.
SELECT pg_is_in_recovery() AS standby;
