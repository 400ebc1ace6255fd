// Package provision takes tenants through their lifecycle — create, suspend,
// resume, delete, restore, purge — and prepares servers of the data plane
// for them.
//
// # Operations
//
// Every change that takes more than one step is a state machine recorded in
// the catalog (catalog.Operation): the operation is written before its first
// step, each step is recorded when it starts and when it completes, and every
// step can run again from its start. A process that dies, or a step that
// fails, leaves the operation open with its completed steps; Continue (or
// running the same Create or Purge again) finishes it, and Rollback undoes a
// provisioning. A tenant has at most one open operation, and one process at a
// time works on it (a session advisory lock on the catalog, released when that
// process's connection ends).
//
// Provisioning writes the tenant's catalog row ("provisioning") and its
// operation in one catalog transaction, then runs:
//
//	shared:    activate
//	schema:    role, schema, activate
//	database:  role, database, data_model, activate
//
// role checks that the tenant's schema or database name is free on the server
// (it fails with CodeConflict otherwise) and creates the tenant's role; once
// it completed, that name is the tenant's. schema creates the schema, applies
// the data model and protects its tables (grants, Row-Level Security, tenant
// pin, soft-delete and audit triggers) in one transaction. database creates
// the database by cloning the server's template database (see below);
// data_model then brings it to the data model in one transaction — in a
// clone the migrations are already applied, and what remains is what differs
// per tenant: the platform key, the grants to the tenant's role and the
// tenant pin (with Config.NoTemplate, an empty database replays every
// migration instead). activate
// marks the tenant active, finishes the operation and records the
// tenant_created event in one catalog transaction, so a tenant is never
// active without its storage. Rolling back drops the storage (only when the
// name was the tenant's), then the role, then removes the catalog row in the
// transaction that finishes the operation, so storage never outlives its
// catalog row.
//
// # Template databases
//
// A database-model tenant starts as a copy (CREATE DATABASE … TEMPLATE) of a
// template database kept on each server at the data model's latest version,
// named tenancy_tmpl_ and a digest of the data model, so a changed data model
// gets a new template. It is built on first use, under an advisory lock on the
// server, in a database of a unique name that is renamed once complete: a
// half-built template is never cloned. Nobody may connect to it
// (ALLOW_CONNECTIONS false), because PostgreSQL refuses to copy a database
// that someone is connected to; a clone that still meets a connection retries
// briefly. Templates of earlier data models are left in place, since another
// platform on the same server may use them; drop them by hand when no longer
// wanted.
//
// # Offboarding
//
// Suspend, Unsuspend, Delete and Restore each change the tenant's status,
// record the operation and the control-plane event in one catalog
// transaction. Delete is soft: the data stays, requests get CodeGone. Purge
// destroys a deleted tenant's data once its retention period (Config.Retention)
// has passed and only when confirmed with the tenant's slug: it drops the
// schema or database and the role, or, in the shared model, deletes the
// tenant's rows from every shared table as their owner under the
// transaction-local setting tenancy.purge = 'tenant' (which the soft-delete
// triggers honour only for the owner). Purge is resumable like provisioning. A
// purged tenant's catalog row stays as a tombstone with status purged: its id
// and slug remain taken, and the control-plane events that name it still
// resolve.
//
// The server's DSN must be a superuser (or a role with BYPASSRLS that owns the
// tenant tables and may create roles and databases).
package provision
