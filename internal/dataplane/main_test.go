package dataplane_test

import (
	"testing"

	"github.com/tenancyhq/tenancy/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
