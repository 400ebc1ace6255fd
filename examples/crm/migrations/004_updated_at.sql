-- When each record last changed, a phone number for contacts, and indexes for
-- the filters of the REST API.
ALTER TABLE companies ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE contacts ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE contacts ADD COLUMN phone text;
ALTER TABLE deals ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE notes ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX contacts_company_idx ON contacts (tenant_id, company_id);
CREATE INDEX deals_contact_idx ON deals (tenant_id, contact_id);
CREATE INDEX notes_contact_idx ON notes (tenant_id, contact_id);
