-- Each plan's budget of database time (tenancy.Limits.DBTime): the seconds a
-- tenant's transactions may hold a connection per second, on one app node.
-- 0 means no budget. NULL in an override keeps the plan's value.
ALTER TABLE catalog.plans ADD COLUMN db_time double precision NOT NULL DEFAULT 0 CHECK (db_time >= 0 AND db_time <= 1000);
ALTER TABLE catalog.plan_overrides ADD COLUMN db_time double precision CHECK (db_time >= 0 AND db_time <= 1000);
