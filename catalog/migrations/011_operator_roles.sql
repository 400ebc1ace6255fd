-- An operator's role: admin may do everything the control API does; viewer
-- may only read (GET), for support or finance staff.
ALTER TABLE catalog.operators ADD COLUMN role text NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'viewer'));
