// Package web is the admin dashboard: plain HTML, CSS and JavaScript embedded
// in the binary (no build step), talking to the control API with the operator
// token.
//
// It shows the tenants with their tier, model, placement, status, size, rows,
// requests, 429s and migration version; creates, suspends, resumes, deletes
// and restores tenants and changes their tier; and shows the control-plane log and a tenant's audit
// log, each with whether its hash chain verifies. It is usable with the keyboard
// alone and labelled for screen readers.
//
// Serve it under a prefix with the control API at "/control" beside it:
//
//	mux.Handle("/admin/", http.StripPrefix("/admin", web.Handler()))
package web
