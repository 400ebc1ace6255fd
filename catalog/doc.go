// Package catalog is the control plane of tenancy: the servers of the data
// plane and the tenants placed on them, in a PostgreSQL database of its own with
// its own versioned migrations.
//
// Every change to a tenant row bumps its version and sends a notification on
// the channel "tenancy_catalog". A Cache in each app process listens to it and
// drops what changed, with a bounded TTL as the fallback when a notification is
// missed (for example while the listening connection was down).
//
// Plans hold each tier's limits (requests per second and burst, concurrent
// transactions, statement timeout), and a tenant may override them. Changes
// notify on the same channel; Cache.Limits follows them. See Plan.
package catalog
