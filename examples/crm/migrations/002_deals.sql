CREATE TABLE deals (
    tenant_id  uuid NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    contact_id bigint NOT NULL,
    title      text NOT NULL,
    amount     numeric(12, 2) NOT NULL DEFAULT 0,
    stage      text NOT NULL DEFAULT 'lead',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id)
);
