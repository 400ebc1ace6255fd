// Package web is the admin dashboard: plain HTML, CSS and JavaScript embedded
// in the binary (no build step), talking to the control API with the operator
// token.
//
// It shows the tenants with their tier, model, placement, status, size and
// migration version; creates tenants; offers the lifecycle verbs (which answer
// what the control API answers, 501 until wired); and shows a tenant's audit
// log and whether its hash chain verifies. It is usable with the keyboard
// alone and labelled for screen readers.
//
// Serve it under a prefix with the control API at "/control" beside it:
//
//	mux.Handle("/admin/", http.StripPrefix("/admin", web.Handler()))
package web
