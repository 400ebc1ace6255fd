// Package controlapi is the control plane's HTTP API: JSON for operators and
// the admin dashboard, described by an OpenAPI 3 document (GET /openapi.json).
//
// Every request must carry an operator token (Authorization: Bearer …): a
// named operator's (opk_…, see catalog.AddOperator and `tenancy operators`),
// whose actions are recorded as operator:NAME, or the shared Config.Token,
// compared in constant time and recorded as operator:token, which needs no
// catalog and so works while the catalog is down. Every control action —
// reads included — goes through one function, Config.Record, with who, what,
// on which tenant, from where and with what outcome: the one place to point
// at the control-plane audit log.
//
// Tenants can be created, listed and shown, suspended, resumed, deleted,
// restored, purged and given another tier (the platform records each change
// in the control-plane log, readable and verifiable here); their audit log
// read and verified, their usage measured; servers and plans listed; the
// fleet's migration status read; and moved to another model or server (POST
// /v1/tenants/{slug}/move with {"model": …, "server": …}): the destination is
// checked, then the move runs in the background and the answer is 202 with an
// OpResource to poll at GET /v1/operations/{id}. API.Close cancels the
// operations still running.
package controlapi
