package custody.promotion_test

import rego.v1

import data.custody.promotion

clean_candidate := {
	"target_stage": "production",
	"target_stage_position": 30,
	"target_stage_requires_approval": true,
	"stage_positions": {"development": 10, "staging": 20, "production": 30, "archived": 1000},
	"requester": {"email": "alice@example.com"},
	"model": {"name": "churn", "primary_metric": "auc", "higher_is_better": true},
	"model_version": {"id": "v2", "version": 2, "manifest_sha256": "00", "metrics": {"auc": 0.91}},
	"current": {"id": "v1", "version": 1, "manifest_sha256": "11", "metrics": {"auc": 0.90}},
	"lineage": {
		"datasets": [{"id": "d1", "sha256": "aa", "tags": ["training"]}],
		"code_commits": [{"repository": "git@example.com:ml.git", "commit": "abc", "dirty": false}],
	},
	"evaluations": [{"run_id": "r9", "metrics": {}, "datasets": [{"id": "d2", "sha256": "bb", "tags": []}]}],
}

test_clean_production_candidate_needs_two_approvals if {
	count(promotion.deny) == 0 with input as clean_candidate
	promotion.required_approvals == 2 with input as clean_candidate
	not promotion.approver_group with input as clean_candidate
}

test_production_without_evaluation_dataset_is_denied if {
	no_eval := object.union(clean_candidate, {"evaluations": []})
	some msg in promotion.deny with input as no_eval
	contains(msg, "evaluation dataset")
}

test_dirty_commit_denied_beyond_staging if {
	dirty := object.union(clean_candidate, {"lineage": {
		"datasets": clean_candidate.lineage.datasets,
		"code_commits": [{"repository": "r", "commit": "c", "dirty": true}],
	}})
	some msg in promotion.deny with input as dirty
	contains(msg, "uncommitted changes")
}

test_dirty_commit_allowed_into_staging if {
	staging := object.union(clean_candidate, {
		"target_stage": "staging",
		"target_stage_position": 20,
		"lineage": {"datasets": [], "code_commits": [{"repository": "r", "commit": "c", "dirty": true}]},
	})
	count(promotion.deny) == 0 with input as staging
	promotion.required_approvals == 1 with input as staging
}

test_pii_training_data_needs_privacy_approver if {
	pii := object.union(clean_candidate, {"lineage": {
		"datasets": [{"id": "d1", "sha256": "aa", "tags": ["pii"]}],
		"code_commits": [],
	}})
	promotion.approver_group == "privacy" with input as pii
}

test_worse_candidate_needs_one_more_approval if {
	worse := object.union(clean_candidate, {"model_version": {"id": "v2", "version": 2, "manifest_sha256": "00", "metrics": {"auc": 0.80}}})
	promotion.required_approvals == 3 with input as worse
}

test_lower_is_better_metric if {
	model := {"name": "churn", "primary_metric": "loss", "higher_is_better": false}
	lower := object.union(clean_candidate, {
		"model": model,
		"model_version": {"id": "v2", "version": 2, "manifest_sha256": "00", "metrics": {"loss": 0.1}},
		"current": {"id": "v1", "version": 1, "manifest_sha256": "11", "metrics": {"loss": 0.2}},
	})
	promotion.required_approvals == 2 with input as lower
}

test_development_applies_at_once if {
	dev := object.union(clean_candidate, {"target_stage": "development", "target_stage_position": 10, "target_stage_requires_approval": false, "evaluations": []})
	count(promotion.deny) == 0 with input as dev
	promotion.required_approvals == 0 with input as dev
}

test_archiving_a_dirty_version_is_allowed if {
	archive := object.union(clean_candidate, {
		"target_stage": "archived",
		"target_stage_position": 1000,
		"target_stage_requires_approval": false,
		"evaluations": [],
		"lineage": {"datasets": [], "code_commits": [{"repository": "r", "commit": "c", "dirty": true}]},
	})
	count(promotion.deny) == 0 with input as archive
	promotion.required_approvals == 0 with input as archive
}

archive_of_production := object.union(clean_candidate, {
	"target_stage": "archived",
	"target_stage_position": 1000,
	"target_stage_requires_approval": false,
	"current_stage": "production",
	"current_stage_requires_approval": true,
	"current": null,
	"evaluations": [],
})

test_leaving_production_for_archived_needs_two_approvals if {
	count(promotion.deny) == 0 with input as archive_of_production
	promotion.required_approvals == 2 with input as archive_of_production
}

test_leaving_production_for_development_needs_two_approvals if {
	back := object.union(archive_of_production, {"target_stage": "development", "target_stage_position": 10})
	promotion.required_approvals == 2 with input as back
}

test_leaving_staging_needs_one_approval if {
	from_staging := object.union(archive_of_production, {"current_stage": "staging"})
	promotion.required_approvals == 1 with input as from_staging
}

test_archiving_from_development_applies_at_once if {
	from_dev := object.union(archive_of_production, {"current_stage": "development", "current_stage_requires_approval": false})
	promotion.required_approvals == 0 with input as from_dev
}

test_archiving_a_version_in_no_stage_applies_at_once if {
	nowhere := object.union(archive_of_production, {"current_stage": null, "current_stage_requires_approval": false})
	promotion.required_approvals == 0 with input as nowhere
}

test_replacing_the_production_holder_is_gated_as_moving_in if {
	from_staging := object.union(clean_candidate, {"current_stage": "staging", "current_stage_requires_approval": true})
	promotion.required_approvals == 2 with input as from_staging
}

recalled_candidate := object.union(clean_candidate, {"lineage": {
	"datasets": clean_candidate.lineage.datasets,
	"code_commits": clean_candidate.lineage.code_commits,
	"recalled": [{"dataset_version_id": "d1", "dataset": "orders", "version": 3, "reason": "consent withdrawn"}],
}})

test_recalled_ancestor_denies_promotion if {
	some msg in promotion.deny with input as recalled_candidate
	contains(msg, "orders version 3 was recalled (consent withdrawn)")
}

test_recalled_ancestor_does_not_block_archiving if {
	archiving := object.union(recalled_candidate, {"target_stage": "archived", "target_stage_position": 1000})
	reasons := promotion.deny with input as archiving
	every msg in reasons {
		not contains(msg, "recalled")
	}
}

test_no_recall_no_denial if {
	lifted := object.union(recalled_candidate, {"lineage": {"recalled": []}})
	reasons := promotion.deny with input as lifted
	every msg in reasons {
		not contains(msg, "recalled")
	}
}
