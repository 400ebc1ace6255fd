package ratelimit_test

import (
	"testing"

	"github.com/tenancyhq/tenancy/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }
