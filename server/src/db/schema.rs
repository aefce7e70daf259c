// Mirrors migrations/ (what `diesel print-schema` would write). Every table is exercised by the
// end-to-end tests in tests/, so a column that drifts from the migration fails there.

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        is_admin -> Bool,
        created_at -> Timestamptz,
        is_auditor -> Bool,
        service_project_id -> Nullable<Uuid>,
        idp_groups -> Array<Text>,
    }
}

diesel::table! {
    invitations (id) {
        id -> Uuid,
        project_id -> Uuid,
        email -> Text,
        role -> Text,
        groups -> Array<Text>,
        invited_by -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        accepted_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    device_logins (id) {
        id -> Uuid,
        device_code_sha256 -> Bytea,
        user_code -> Text,
        client_name -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        last_polled_at -> Nullable<Timestamptz>,
        decided_by -> Nullable<Uuid>,
        decided_at -> Nullable<Timestamptz>,
        approved -> Nullable<Bool>,
        redeemed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        secret_sha256 -> Bytea,
        user_id -> Uuid,
        access_token_id -> Uuid,
        client_name -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        secret_sha256 -> Bytea,
        user_id -> Uuid,
        method -> Text,
        csrf_token -> Text,
        signed_in_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    sign_in_links (id) {
        id -> Uuid,
        secret_sha256 -> Bytea,
        email -> Text,
        browser_sha256 -> Bytea,
        next_path -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    access_tokens (id) {
        id -> Uuid,
        name -> Text,
        secret_sha256 -> Bytea,
        user_id -> Uuid,
        project_id -> Nullable<Uuid>,
        read_only -> Bool,
        created_by -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    api_tokens (jti) {
        jti -> Uuid,
        user_id -> Uuid,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    projects (id) {
        id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        created_at -> Timestamptz,
        approval_sign_in -> Nullable<Text>,
        mlflow_name -> Nullable<Text>,
        mlflow_tags -> Jsonb,
    }
}

diesel::table! {
    memberships (project_id, user_id) {
        project_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
        groups -> Array<Text>,
        created_at -> Timestamptz,
        granted_by -> Nullable<Uuid>,
        granted_at -> Timestamptz,
    }
}

diesel::table! {
    datasets (id) {
        id -> Uuid,
        project_id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    dataset_versions (id) {
        id -> Uuid,
        dataset_id -> Uuid,
        version -> Int4,
        uri -> Text,
        sha256 -> Text,
        size_bytes -> Nullable<Int8>,
        tags -> Array<Text>,
        created_by -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    code_commits (id) {
        id -> Uuid,
        repository -> Text,
        commit_sha -> Text,
        branch -> Nullable<Text>,
        author -> Nullable<Text>,
        message -> Nullable<Text>,
        dirty -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    runs (id) {
        id -> Uuid,
        project_id -> Uuid,
        name -> Nullable<Text>,
        status -> Text,
        code_commit_id -> Nullable<Uuid>,
        tags -> Jsonb,
        created_by -> Uuid,
        started_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    run_params (run_id, key) {
        run_id -> Uuid,
        key -> Text,
        value -> Text,
    }
}

diesel::table! {
    run_metrics (run_id, key, step, at) {
        run_id -> Uuid,
        key -> Text,
        value -> Float8,
        step -> Int8,
        at -> Timestamptz,
    }
}

diesel::table! {
    run_keys (project_id, key) {
        project_id -> Uuid,
        key -> Text,
    }
}

diesel::table! {
    run_latest_metrics (run_id, key) {
        run_id -> Uuid,
        key -> Text,
        value -> Float8,
        step -> Int8,
        at -> Timestamptz,
        points -> Int8,
        earliest_value -> Float8,
        earliest_step -> Int8,
        earliest_at -> Timestamptz,
    }
}

diesel::table! {
    run_metric_chunks (run_id, key, level, chunk) {
        run_id -> Uuid,
        key -> Text,
        level -> Int2,
        chunk -> Int8,
        points -> Int4,
        min_value -> Float8,
        min_step -> Int8,
        min_at -> Timestamptz,
        max_value -> Float8,
        max_step -> Int8,
        max_at -> Timestamptz,
    }
}

diesel::table! {
    models (id) {
        id -> Uuid,
        project_id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        created_at -> Timestamptz,
        primary_metric -> Nullable<Text>,
        higher_is_better -> Bool,
        tags -> Jsonb,
    }
}

diesel::table! {
    model_versions (id) {
        id -> Uuid,
        model_id -> Uuid,
        version -> Int4,
        run_id -> Uuid,
        artifact_path -> Nullable<Text>,
        description -> Nullable<Text>,
        stage -> Nullable<Text>,
        created_by -> Uuid,
        created_at -> Timestamptz,
        manifest_sha256 -> Text,
        tags -> Jsonb,
    }
}

diesel::table! {
    model_aliases (model_id, alias) {
        model_id -> Uuid,
        alias -> Text,
        model_version_id -> Uuid,
        set_by -> Uuid,
        set_at -> Timestamptz,
    }
}

diesel::table! {
    governed_aliases (project_id, alias) {
        project_id -> Uuid,
        alias -> Text,
        stage -> Text,
    }
}

diesel::table! {
    deployments (id) {
        id -> Uuid,
        model_version_id -> Uuid,
        stage -> Text,
        created_at -> Timestamptz,
        promotion_id -> Nullable<Uuid>,
        replaced_version_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    lineage_edges (id) {
        id -> Uuid,
        from_kind -> Text,
        from_id -> Uuid,
        to_kind -> Text,
        to_id -> Uuid,
        relation -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> Int8,
        at -> Timestamptz,
        actor -> Text,
        action -> Text,
        project_id -> Nullable<Uuid>,
        subject_kind -> Text,
        subject_id -> Text,
        before -> Nullable<Jsonb>,
        after -> Nullable<Jsonb>,
        request_id -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    audit_head (singleton) {
        singleton -> Bool,
        seq -> Int8,
        hash -> Text,
    }
}

diesel::table! {
    artifact_objects (sha256) {
        sha256 -> Text,
        size_bytes -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    run_artifacts (run_id, path) {
        run_id -> Uuid,
        path -> Text,
        sha256 -> Text,
        size_bytes -> Int8,
        created_by -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    model_version_files (model_version_id, path) {
        model_version_id -> Uuid,
        path -> Text,
        sha256 -> Text,
        size_bytes -> Int8,
    }
}

diesel::table! {
    pending_uploads (id) {
        id -> Uuid,
        run_id -> Uuid,
        path -> Text,
        created_by -> Uuid,
        started_at -> Timestamptz,
        sha256 -> Nullable<Text>,
        size_bytes -> Nullable<Int8>,
        expected_sha256 -> Nullable<Text>,
        expected_size -> Nullable<Int8>,
        part_count -> Nullable<Int4>,
        store_upload_id -> Nullable<Text>,
    }
}

diesel::table! {
    project_stages (project_id, name) {
        project_id -> Uuid,
        name -> Text,
        position -> Int4,
        requires_approval -> Bool,
    }
}

diesel::table! {
    promotions (id) {
        id -> Uuid,
        project_id -> Uuid,
        model_version_id -> Uuid,
        stage -> Text,
        status -> Text,
        requested_by -> Uuid,
        comment -> Nullable<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        decided_at -> Nullable<Timestamptz>,
        manifest_sha256 -> Text,
        policy_digest -> Text,
        policy_input -> Jsonb,
        policy_result -> Jsonb,
        required_approvals -> Int4,
        approver_group -> Nullable<Text>,
        replaced_version_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    approvals (id) {
        id -> Uuid,
        promotion_id -> Uuid,
        approver_id -> Uuid,
        decision -> Text,
        comment -> Nullable<Text>,
        via -> Text,
        at -> Timestamptz,
        auth_method -> Text,
    }
}

diesel::table! {
    approval_links (jti) {
        jti -> Uuid,
        promotion_id -> Uuid,
        approver_id -> Uuid,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Uuid,
        project_id -> Uuid,
        url -> Text,
        secret -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Uuid,
        kind -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        available_at -> Timestamptz,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mlflow_logged_models (id) {
        id -> Text,
        project_id -> Uuid,
        run_id -> Uuid,
        name -> Text,
        model_type -> Nullable<Text>,
        status -> Text,
        params -> Jsonb,
        tags -> Jsonb,
        created_by -> Uuid,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    mlflow_run_outputs (run_id, logged_model_id) {
        run_id -> Uuid,
        logged_model_id -> Text,
        step -> Int8,
    }
}

diesel::table! {
    mlflow_datasets (dataset_version_id) {
        dataset_version_id -> Uuid,
        name -> Text,
        digest -> Text,
        source_type -> Text,
        source -> Text,
        schema -> Nullable<Text>,
        profile -> Nullable<Text>,
    }
}

diesel::table! {
    mlflow_run_inputs (run_id, dataset_version_id) {
        run_id -> Uuid,
        dataset_version_id -> Uuid,
        tags -> Jsonb,
    }
}

diesel::joinable!(project_stages -> projects (project_id));
diesel::joinable!(jobs -> projects (project_id));
diesel::joinable!(openlineage_runs -> runs (run_id));
diesel::joinable!(openlineage_runs -> jobs (job_id));
diesel::joinable!(openlineage_datasets -> datasets (dataset_id));
diesel::joinable!(dataset_recalls -> dataset_versions (dataset_version_id));
diesel::joinable!(promotions -> model_versions (model_version_id));
diesel::joinable!(promotions -> projects (project_id));
diesel::joinable!(approvals -> promotions (promotion_id));
diesel::joinable!(approvals -> users (approver_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(invitations -> projects (project_id));
diesel::joinable!(webhooks -> projects (project_id));
diesel::joinable!(run_artifacts -> runs (run_id));
diesel::joinable!(model_version_files -> model_versions (model_version_id));
diesel::joinable!(pending_uploads -> runs (run_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(access_tokens -> projects (project_id));
diesel::joinable!(memberships -> projects (project_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(datasets -> projects (project_id));
diesel::joinable!(dataset_versions -> datasets (dataset_id));
diesel::joinable!(runs -> projects (project_id));
diesel::joinable!(runs -> code_commits (code_commit_id));
diesel::joinable!(run_params -> runs (run_id));
diesel::joinable!(model_aliases -> model_versions (model_version_id));
diesel::joinable!(run_keys -> projects (project_id));
diesel::joinable!(run_latest_metrics -> runs (run_id));
diesel::joinable!(run_metric_chunks -> runs (run_id));
diesel::joinable!(run_metrics -> runs (run_id));
diesel::joinable!(models -> projects (project_id));
diesel::joinable!(model_versions -> models (model_id));
diesel::joinable!(model_versions -> runs (run_id));
diesel::joinable!(deployments -> model_versions (model_version_id));
diesel::joinable!(mlflow_logged_models -> runs (run_id));
diesel::joinable!(mlflow_run_outputs -> mlflow_logged_models (logged_model_id));
diesel::joinable!(mlflow_datasets -> dataset_versions (dataset_version_id));
diesel::joinable!(mlflow_run_inputs -> dataset_versions (dataset_version_id));

diesel::table! {
    audit_checkpoints (id) {
        id -> Uuid,
        seq -> Int8,
        hash -> Text,
        signed_at -> Timestamptz,
        reason -> Text,
        actor -> Text,
        key_id -> Text,
        jws -> Text,
    }
}

diesel::table! {
    audit_archives (id) {
        id -> Uuid,
        before -> Timestamptz,
        first_seq -> Nullable<Int8>,
        last_seq -> Nullable<Int8>,
        entry_count -> Int8,
        sha256 -> Text,
        size_bytes -> Int8,
        manifest -> Text,
        created_by -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// Topics some replica has live subscribers for (`events`); unlogged.
    event_watches (topic, replica) {
        topic -> Text,
        replica -> Uuid,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    jobs (id) {
        id -> Uuid,
        project_id -> Uuid,
        namespace -> Text,
        name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    openlineage_runs (openlineage_run_id) {
        openlineage_run_id -> Uuid,
        run_id -> Uuid,
        job_id -> Uuid,
    }
}

diesel::table! {
    openlineage_datasets (namespace, name) {
        namespace -> Text,
        name -> Text,
        dataset_id -> Uuid,
    }
}

diesel::table! {
    openlineage_events (sha256) {
        sha256 -> Text,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    dataset_recalls (id) {
        id -> Uuid,
        dataset_version_id -> Uuid,
        reason -> Text,
        recalled_by -> Uuid,
        recalled_at -> Timestamptz,
        lifted_by -> Nullable<Uuid>,
        lifted_at -> Nullable<Timestamptz>,
        lift_reason -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    access_tokens,
    sessions,
    sign_in_links,
    invitations,
    device_logins,
    refresh_tokens,
    users,
    api_tokens,
    projects,
    memberships,
    datasets,
    dataset_versions,
    code_commits,
    runs,
    run_params,
    model_aliases,
    governed_aliases,
    run_keys,
    run_latest_metrics,
    run_metrics,
    models,
    model_versions,
    deployments,
    lineage_edges,
    audit_log,
    audit_head,
    audit_checkpoints,
    audit_archives,
    artifact_objects,
    run_artifacts,
    model_version_files,
    pending_uploads,
    project_stages,
    promotions,
    approvals,
    approval_links,
    webhooks,
    outbox,
    event_watches,
    run_metric_chunks,
    mlflow_logged_models,
    mlflow_run_outputs,
    mlflow_datasets,
    mlflow_run_inputs,
    jobs,
    openlineage_runs,
    openlineage_datasets,
    openlineage_events,
    dataset_recalls,
);
