package tenancy

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Model is a tenant's isolation model: where its rows live and what isolates them.
type Model string

const (
	// ModelShared keeps the tenant's rows in shared tables, isolated by
	// Row-Level Security on tenant_id.
	ModelShared Model = "shared"
	// ModelSchema gives the tenant its own schema in a shared database and a
	// NOLOGIN role that can reach only that schema.
	ModelSchema Model = "schema"
	// ModelDatabase gives the tenant its own database on a chosen server.
	ModelDatabase Model = "database"
)

// Models lists every isolation model, in order of increasing isolation.
var Models = []Model{ModelShared, ModelSchema, ModelDatabase}

// ParseModel returns the Model named s, or an error with code CodeInvalid.
func ParseModel(s string) (Model, error) {
	for _, m := range Models {
		if string(m) == s {
			return m, nil
		}
	}
	return "", Errorf(CodeInvalid, "unknown isolation model %q (want shared, schema or database)", s)
}

// Status is where a tenant is in its lifecycle.
type Status string

const (
	// StatusProvisioning: the tenant's storage is being created; it is not served.
	StatusProvisioning Status = "provisioning"
	// StatusActive: the tenant is served.
	StatusActive Status = "active"
	// StatusSuspended: the tenant's data is kept but its requests are refused.
	StatusSuspended Status = "suspended"
	// StatusMoving: the tenant is being moved between models or servers; it is served.
	StatusMoving Status = "moving"
	// StatusDeleted: the tenant is soft-deleted; its data is kept until a purge.
	StatusDeleted Status = "deleted"
	// StatusPurged: the tenant's data is destroyed; its catalog row stays as a
	// tombstone that keeps its id and slug taken.
	StatusPurged Status = "purged"
)

// Servable reports whether requests for a tenant in this status may reach its data.
func (s Status) Servable() bool { return s == StatusActive || s == StatusMoving }

// CheckServable returns nil when the tenant's data may be served, else an
// error whose code says why not: CodeGone (deleted), CodeSuspended,
// CodeUnavailable (provisioning), or CodeInternal (an unknown status). Every
// layer that serves a tenant (HTTP, router, background work) asks it.
func (t *Tenant) CheckServable() error {
	switch {
	case t.DeletedAt != nil || t.Status == StatusDeleted || t.Status == StatusPurged:
		return Errorf(CodeGone, "tenant %q was deleted", t.Slug)
	case t.Status.Servable():
		return nil
	case t.Status == StatusSuspended:
		return Errorf(CodeSuspended, "tenant %q is suspended", t.Slug)
	case t.Status == StatusProvisioning:
		return Errorf(CodeUnavailable, "tenant %q is being provisioned; retry later", t.Slug)
	default: // a status this code does not know is a bug, not the caller's fault
		return fmt.Errorf("tenant %q has unknown status %q", t.Slug, t.Status)
	}
}

// Tier is a tenant's commercial plan (for example "free", "pro", "enterprise").
// The catalog holds the limits of each tier.
type Tier string

// Placement says where a tenant's rows live.
type Placement struct {
	// Server is the catalog name of the PostgreSQL server.
	Server string `json:"server"`
	// Database is the database on that server: the shared database for the
	// shared and schema models, the tenant's own for the database model.
	Database string `json:"database"`
	// Schema is the tenant's schema in the schema model, and the schema of the
	// shared tables otherwise.
	Schema string `json:"schema"`
}

// String formats the placement as server/database/schema.
func (p Placement) String() string { return fmt.Sprintf("%s/%s/%s", p.Server, p.Database, p.Schema) }

// Tenant is one customer of the SaaS, as recorded in the catalog.
type Tenant struct {
	ID        uuid.UUID  `json:"id"`
	Slug      string     `json:"slug"`
	Name      string     `json:"name"`
	Tier      Tier       `json:"tier"`
	Model     Model      `json:"model"`
	Placement Placement  `json:"placement"`
	Status    Status     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
	// Version increases with every change of the catalog row; caches compare it.
	Version int64 `json:"version"`
}

// Role is the name of the tenant's own NOLOGIN role in the schema and database
// models. It is derived from the tenant's id, so it never depends on input.
func (t *Tenant) Role() string { return RoleName(t.ID) }

// RoleName is the NOLOGIN role of the tenant with the given id.
func RoleName(id uuid.UUID) string {
	b := id // copy
	return fmt.Sprintf("tenancy_t_%x", b[:])
}
