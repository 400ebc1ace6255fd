-- A move with keep_source leaves the tenant's old copy in place, marked moved
-- away; source_dropped_at records when that copy was removed (by `tenancy
-- tenants drop-kept`, or by the tenant's purge).
ALTER TABLE catalog.moves ADD COLUMN source_dropped_at timestamptz;
