package provision

import "github.com/tenancyhq/tenancy/catalog"

// SetHook makes p call hook before and after every step of its operations:
// an error fails the step, a panic stands for the process dying there.
func SetHook(p *Provisioner, hook func(kind catalog.OpKind, step string, after bool) error) {
	p.hook = hook
}

// BuildingMark is the comment p puts on a template database it is building.
func BuildingMark(p *Provisioner) string { return p.templateOwner() + buildingMark }
