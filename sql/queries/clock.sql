-- The database clock (every job's "now": today, yesterday, which hour or day is
-- finished, how old something is).  The hosts' clocks may be skewed; this one is shared.

-- db_now --
-- The database clock, as a timestamptz (the caller converts it to its zone).
SELECT now() AS now;
