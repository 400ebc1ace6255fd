module github.com/tenancyhq/tenancy/bench

go 1.26.0

require (
	github.com/jackc/pgx/v5 v5.7.2
	github.com/tenancyhq/tenancy v0.0.0
	gorm.io/driver/postgres v1.5.11
	gorm.io/gorm v1.30.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.2 // indirect
	github.com/jinzhu/inflection v1.0.0 // indirect
	github.com/jinzhu/now v1.1.5 // indirect
	golang.org/x/crypto v0.31.0 // indirect
	golang.org/x/image v0.48.0
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace github.com/tenancyhq/tenancy => ../
