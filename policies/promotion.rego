# Custody's default promotion policy. The server evaluates package custody.promotion with one
# input document per promotion request (its schema: policies/README.md).
#
#   deny                a set of reasons; any reason blocks the promotion (status DENIED)
#   required_approvals  distinct approvers needed (0: applies at once)
#   approver_group      approvers must also belong to this group of the project
#   expires_in          how long the request waits for approvals, e.g. "72h"
package custody.promotion

import rego.v1

to_production if input.target_stage == "production"

# Stages ordered after staging (production, and any later stage an admin adds); archiving is
# retirement, not a step forward.
beyond_staging if {
	input.target_stage != "archived"
	input.target_stage_position > input.stage_positions.staging
}

# Dataset versions consumed by the version's evaluation runs (runs linked to the version with an
# edge run —evaluated→ model_version).
evaluation_datasets contains d.id if {
	some run in input.evaluations
	some d in run.datasets
}

deny contains msg if {
	to_production
	count(evaluation_datasets) == 0
	msg := "production needs an evaluation dataset: link an evaluation run that consumed a dataset version (run —evaluated→ model version)"
}

deny contains msg if {
	beyond_staging
	some c in input.lineage.code_commits
	c.dirty
	msg := sprintf("commit %s of %s had uncommitted changes: only clean commits go beyond staging", [c.commit, c.repository])
}

# Data recalled after the fact (consent withdrawn, a licence breached) blocks every promotion of
# what was built on it, except retiring it: archiving stays open so the version can be taken out.
deny contains msg if {
	input.target_stage != "archived"
	some r in input.lineage.recalled
	msg := sprintf("built on recalled data: %s version %d was recalled (%s)", [r.dataset, r.version, r.reason])
}

trained_on_pii if {
	some d in input.lineage.datasets
	"pii" in d.tags
}

approver_group := "privacy" if trained_on_pii

# The candidate ranks below the version it would replace in production.
worse_than_current if {
	to_production
	metric := input.model.primary_metric
	candidate := input.model_version.metrics[metric]
	current := input.current.metrics[metric]
	input.model.higher_is_better
	candidate < current
}

worse_than_current if {
	to_production
	metric := input.model.primary_metric
	candidate := input.model_version.metrics[metric]
	current := input.current.metrics[metric]
	not input.model.higher_is_better
	candidate > current
}

# Moving a version out of a stage (to archived, back to development, anywhere) needs the gate of
# the stage it leaves: nobody empties production or staging alone. (The server also enforces a
# floor: at least the approvals the version needed to get there.)
leaving_production if {
	input.current_stage == "production"
	input.target_stage != "production"
}

leaving_gated_stage if {
	input.current_stage != null
	input.current_stage != input.target_stage
	input.current_stage_requires_approval
}

base_approvals := 2 if {
	to_production
} else := 2 if {
	leaving_production
} else := 1 if {
	input.target_stage_requires_approval
} else := 1 if {
	leaving_gated_stage
} else := 0

extra_approvals := 1 if worse_than_current else := 0

required_approvals := base_approvals + extra_approvals

expires_in := "168h"
