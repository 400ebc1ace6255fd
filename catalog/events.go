package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
)

// EventKind names a control-plane event.
type EventKind string

// The control-plane events. Other packages may record kinds of their own: a
// kind is a lower-case word.
const (
	EventTenantCreated EventKind = "tenant_created"
	EventTierChanged   EventKind = "tier_changed"
	EventModelChanged  EventKind = "model_changed"
	EventSuspended     EventKind = "suspended"
	EventResumed       EventKind = "resumed"
	EventDeleted       EventKind = "deleted"
	EventRestored      EventKind = "restored"
	EventPurged        EventKind = "purged"
	EventMoved         EventKind = "moved"
	EventMigrated      EventKind = "migrated"
	// EventRolledBack: a provisioning was rolled back; the tenant's row and
	// storage are gone.
	EventRolledBack EventKind = "rolled_back"
	// EventOperationFailed: a long operation started through the control
	// API (a move) failed in the background; details name it and the error.
	EventOperationFailed EventKind = "operation_failed"
)

// Event is one entry of the control plane's audit log.
type Event struct {
	// Seq numbers events in the order of the hash chain; it is the cursor of
	// Events.
	Seq        int64     `json:"seq"`
	At         time.Time `json:"at"`
	Kind       EventKind `json:"kind"`
	TenantID   uuid.UUID `json:"tenant_id,omitzero"`
	TenantSlug string    `json:"tenant_slug,omitempty"`
	// Operator is who acted (tenancy.Actor, as kind:id); ClientIP where from.
	Operator string          `json:"operator,omitempty"`
	ClientIP string          `json:"client_ip,omitempty"`
	Details  json.RawMessage `json:"details,omitempty"`
}

// RecordEventTx appends e to the control-plane log in tx, so that it commits
// with the change it records, or not at all. The operator and client IP come
// from ctx (tenancy.WithActor, tenancy.WithClient) when e leaves them empty.
// details, when not nil, is marshalled to JSON.
func RecordEventTx(ctx context.Context, tx pgx.Tx, e *Event, details any) error {
	if e.Operator == "" && e.ClientIP == "" {
		e.Operator, e.ClientIP = whoFrom(ctx)
	}
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return fmt.Errorf("event %s: details: %w", e.Kind, err)
		}
		e.Details = b
	}
	if e.Details == nil {
		e.Details = json.RawMessage(`{}`)
	}
	err := tx.QueryRow(ctx, `INSERT INTO catalog.events (seq, kind, tenant_id, tenant_slug, operator, client_ip, details, prev_hash, hash)
		VALUES (0, $1, $2, $3, $4, $5, $6, '', '') RETURNING seq, at`,
		e.Kind, nilUUID(e.TenantID), e.TenantSlug, e.Operator, e.ClientIP, e.Details).Scan(&e.Seq, &e.At)
	if err != nil {
		return fmt.Errorf("record event %s: %w", e.Kind, err)
	}
	return nil
}

// RecordEvent appends e to the control-plane log in a transaction of its own;
// see RecordEventTx.
func (c *Catalog) RecordEvent(ctx context.Context, e *Event, details any) error {
	return c.Tx(ctx, func(tx pgx.Tx) error { return RecordEventTx(ctx, tx, e, details) })
}

// EventOpts filter Events. The zero value lists the first page of every event.
type EventOpts struct {
	TenantID uuid.UUID // only events of this tenant
	Kind     EventKind // only events of this kind
	Operator string    // only events by this operator (kind:id)
	Since    time.Time // only events at or after this time
	Until    time.Time // only events before this time
	// After is the cursor: only events with a greater Seq (the next value
	// returned by the previous page).
	After int64
	// Limit is the page size, 1 to 1000; default 100.
	Limit int
}

// Events lists control-plane events in order, and returns the cursor of the
// next page (0 when this page is the last).
func (c *Catalog) Events(ctx context.Context, opts *EventOpts) ([]Event, int64, error) {
	if opts == nil {
		opts = &EventOpts{}
	}
	limit := opts.Limit
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 {
		return nil, 0, tenancy.FieldErrorf(tenancy.CodeInvalid, "limit", "page size must be between 1 and 1000, got %d", limit)
	}
	if opts.After < 0 {
		return nil, 0, tenancy.FieldErrorf(tenancy.CodeInvalid, "after", "cursor must not be negative, got %d", opts.After)
	}
	rows, err := c.pool.Query(ctx, `SELECT seq, at, kind, coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'),
			tenant_slug, operator, client_ip, details
		FROM catalog.events
		WHERE seq > $1 AND ($2::uuid IS NULL OR tenant_id = $2) AND ($3 = '' OR kind = $3) AND ($4 = '' OR operator = $4)
		  AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)
		ORDER BY seq LIMIT $7`,
		opts.After, nilUUID(opts.TenantID), string(opts.Kind), opts.Operator, nilTime(opts.Since), nilTime(opts.Until), limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("list events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.Seq, &e.At, &e.Kind, &e.TenantID, &e.TenantSlug, &e.Operator, &e.ClientIP, &e.Details)
		return e, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list events: %w", err)
	}
	var next int64
	if len(events) > limit {
		events = events[:limit]
		next = events[limit-1].Seq
	}
	return events, next, nil
}

// EventsVerification is the result of VerifyEvents.
type EventsVerification struct {
	OK     bool  `json:"ok"`
	Events int64 `json:"events"`
	// FirstBad is the Seq of the first event that does not verify, or where
	// the chain breaks; 0 when OK.
	FirstBad int64  `json:"first_bad,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// VerifyEvents checks the control-plane log's hash chain: every event's hash
// over its fields and its predecessor's hash, the sequence without gaps, and
// the chain's head.
func (c *Catalog) VerifyEvents(ctx context.Context) (*EventsVerification, error) {
	v := &EventsVerification{}
	err := c.pool.QueryRow(ctx, `
		WITH e AS (
			SELECT seq, hash, prev_hash,
				lag(seq, 1, 0::bigint) OVER w AS prev_seq,
				lag(hash, 1, '\x'::bytea) OVER w AS prev_actual,
				catalog.event_digest(prev_hash, seq, at, kind, tenant_id, tenant_slug, operator, client_ip, details) AS digest
			FROM catalog.events WINDOW w AS (ORDER BY seq))
		SELECT (SELECT count(*) FROM e),
			coalesce((SELECT seq FROM e WHERE seq <> prev_seq + 1 OR prev_hash <> prev_actual OR hash <> digest ORDER BY seq LIMIT 1), 0),
			coalesce((SELECT CASE WHEN seq <> prev_seq + 1 THEN 'an event before it is missing'
				WHEN prev_hash <> prev_actual THEN 'it does not follow the event before it'
				ELSE 'its content was changed' END
				FROM e WHERE seq <> prev_seq + 1 OR prev_hash <> prev_actual OR hash <> digest ORDER BY seq LIMIT 1), ''),
			(SELECT h.seq = coalesce((SELECT max(seq) FROM e), 0) AND h.hash = coalesce((SELECT hash FROM e ORDER BY seq DESC LIMIT 1), '\x')
				FROM catalog.events_head h)`).Scan(&v.Events, &v.FirstBad, &v.Reason, &v.OK)
	if err != nil {
		return nil, fmt.Errorf("verify events: %w", err)
	}
	headOK := v.OK
	v.OK = v.FirstBad == 0 && headOK
	if v.FirstBad == 0 && !headOK {
		v.FirstBad, v.Reason = v.Events+1, "the last events were removed (the chain's head does not match)"
	}
	return v, nil
}

func nilTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
