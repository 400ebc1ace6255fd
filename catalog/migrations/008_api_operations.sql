-- Long operations that a node's control API runs in the background (moves,
-- purges): the resource clients poll, kept here so that every node can answer
-- for it and it outlives the node. doc is the resource as the API shows it;
-- the node that runs it refreshes heartbeat_at while it runs, so that an
-- operation whose node died is told apart from one still running.
CREATE TABLE catalog.api_operations (
    id           text PRIMARY KEY,
    node         text NOT NULL,
    running      boolean NOT NULL,
    doc          jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_operations_created_idx ON catalog.api_operations (created_at DESC);
