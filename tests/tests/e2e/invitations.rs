//! Invitations: adding an address without an account creates no user; a project admin invites
//! it, the invitee is mailed and joins (role, groups, granted by the inviter) by signing in —
//! and the outsider's, the insider's and the withdrawn attempts change nothing.

use std::time::Duration;

use custody_tests::fixtures::*;
use custody_tests::governance::{outbox_settled, start_env_with_smtp};
use custody_tests::sign_in::{
    ask_for_link, cookie_client, session_csrf, session_gql, sign_in_by_email,
};
use serde_json::json;

const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";
const INVITE: &str = "mutation($p: String!, $e: String!, $r: Role!, $g: [String!]) {
    inviteMember(project: $p, email: $e, role: $r, groups: $g) {
      id email role groups invitedBy { email } expiresAt acceptedAt revokedAt } }";
const ADD: &str = "mutation($p: String!, $e: String!) { addMember(project: $p, email: $e, role: VIEWER) { role } }";
const OPEN: &str = "query($p: String!) { project(name: $p) { invitations { email role } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeInvitation(id: $id) { id revokedAt } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_address_joins_by_signing_in_and_nothing_else_creates_users() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let admin = env.admin.clone();
    create_project(s, &admin, "p").await;
    let viewer = member_token(s, &admin, "p", "viewer@example.com", "VIEWER").await;
    let outsider = s.issue_token("outsider@example.com", false).await;

    // Adding an unknown address creates nobody.
    env.assert_refused(&admin, "NOT_FOUND", ADD, json!({"p": "p", "e": CAROL}))
        .await;
    // Only the project's admins invite; an address with an account is added, not invited.
    let carol_vars = json!({"p": "p", "e": CAROL, "r": "APPROVER", "g": ["privacy"]});
    env.assert_refused(&viewer, "FORBIDDEN", INVITE, carol_vars.clone())
        .await;
    env.assert_refused(&outsider, "NOT_FOUND", INVITE, carol_vars.clone())
        .await;
    env.assert_refused(
        &admin,
        "CONFLICT",
        INVITE,
        json!({"p": "p", "e": "viewer@example.com", "r": "ADMIN"}),
    )
    .await;
    env.assert_refused(
        &admin,
        "INVALID_INPUT",
        INVITE,
        json!({"p": "p", "e": "not an address", "r": "VIEWER"}),
    )
    .await;

    let invited = env.gql_ok(&admin, INVITE, carol_vars).await["inviteMember"].clone();
    assert_eq!(invited["email"], CAROL);
    assert_eq!(invited["role"], "APPROVER");
    assert_eq!(invited["invitedBy"]["email"], "admin@localhost");
    let mail = smtp.wait_for_one_to(CAROL, Duration::from_secs(30)).await;
    assert!(mail.subject().contains("invited"), "{}", mail.subject());
    assert!(mail.text().contains("/sign-in"));
    let open = env.gql_ok(&admin, OPEN, json!({"p": "p"})).await;
    assert_eq!(
        open["project"]["invitations"],
        json!([{"email": CAROL, "role": "APPROVER"}])
    );
    outbox_settled(&env).await;
    env.assert_refused(&viewer, "FORBIDDEN", OPEN, json!({"p": "p"}))
        .await;

    // Carol signs in by mailed link (no domain rule lets strangers in; her invitation does) and
    // is a member, with the invitation's role and groups, granted by the inviter.
    let carol = sign_in_by_email(s, &smtp, CAROL).await;
    let csrf = session_csrf(&carol, s).await;
    let mine = session_gql(
        &carol,
        s,
        Some(&csrf),
        "{ me { email memberships { role groups project { name } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        mine["data"]["me"]["memberships"],
        json!([{"role": "APPROVER", "groups": ["privacy"], "project": {"name": "p"}}]),
        "{mine}"
    );
    let sql = env.sql().await;
    let granted_by: String = sql
        .query_one(
            "SELECT g.email FROM memberships m JOIN users u ON u.id = m.user_id \
             JOIN users g ON g.id = m.granted_by WHERE u.email = $1",
            &[&CAROL],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(granted_by, "admin@localhost");
    let open = env.gql_ok(&admin, OPEN, json!({"p": "p"})).await;
    assert_eq!(open["project"]["invitations"], json!([]));

    // A withdrawn invitation lets nobody in: Dave asks for a link and gets no mail, no account.
    let dave = env
        .gql_ok(&admin, INVITE, json!({"p": "p", "e": DAVE, "r": "VIEWER"}))
        .await["inviteMember"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    smtp.wait_for_one_to(DAVE, Duration::from_secs(30)).await;
    outbox_settled(&env).await;
    env.assert_refused(&viewer, "NOT_FOUND", REVOKE, json!({"id": dave}))
        .await;
    let revoked = env.gql_ok(&admin, REVOKE, json!({"id": dave})).await;
    assert!(revoked["revokeInvitation"]["revokedAt"].is_string());
    env.assert_refused(&admin, "CONFLICT", REVOKE, json!({"id": dave}))
        .await;
    ask_for_link(&cookie_client(), s, DAVE, "/account").await;
    outbox_settled(&env).await;
    assert_eq!(smtp.messages_to(DAVE).len(), 1, "only the invitation mail");
    let accounts: i64 = sql
        .query_one("SELECT count(*) FROM users WHERE email = $1", &[&DAVE])
        .await
        .unwrap()
        .get(0);
    assert_eq!(accounts, 0);
}
