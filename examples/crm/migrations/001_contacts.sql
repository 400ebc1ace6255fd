-- Companies and the people at them. Every tenant table has tenant_id and a
-- primary key that starts with it; tenancy adds Row-Level Security, the
-- isolation policy and the grants after each migration.
CREATE TABLE companies (
    tenant_id  uuid NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    name       text NOT NULL,
    domain     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE contacts (
    tenant_id  uuid NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    company_id bigint,
    name       text NOT NULL,
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id)
);
CREATE UNIQUE INDEX contacts_email_idx ON contacts (tenant_id, email);
