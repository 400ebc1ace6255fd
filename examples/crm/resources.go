package crm

// The CRM's four resources. Adding a column to the API is adding a field here
// (and a migration).
var resources = []*resource{
	{
		path: "companies", singular: "company",
		fields: []field{
			{name: "name", kind: kindText, required: true, max: 200},
			{name: "domain", kind: kindText, max: 253, filter: true},
		},
		search: []string{"name", "domain"},
	},
	{
		path: "contacts", singular: "contact",
		fields: []field{
			{name: "name", kind: kindText, required: true, max: 200},
			{name: "email", kind: kindEmail, required: true, filter: true},
			{name: "phone", kind: kindText, max: 50},
			{name: "company_id", kind: kindRef, ref: "companies", filter: true},
		},
		search: []string{"name", "email"},
	},
	{
		path: "deals", singular: "deal",
		fields: []field{
			{name: "title", kind: kindText, required: true, max: 200},
			{name: "contact_id", kind: kindRef, ref: "contacts", required: true, filter: true},
			{name: "amount", kind: kindMoney},
			{name: "stage", kind: kindEnum, enum: []string{"lead", "qualified", "proposal", "won", "lost"}, filter: true},
		},
		search: []string{"title"},
	},
	{
		path: "notes", singular: "note",
		fields: []field{
			{name: "body", kind: kindText, required: true, max: 10000},
			{name: "company_id", kind: kindRef, ref: "companies", filter: true},
			{name: "contact_id", kind: kindRef, ref: "contacts", filter: true},
			{name: "deal_id", kind: kindRef, ref: "deals", filter: true},
		},
		search: []string{"body"},
	},
}
