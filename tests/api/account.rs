//! Account deletion and restore; invitations and roles.

use crate::common;

use crate::common::{STRONG_PASSWORD, TestApp, s, unique_email};
use serde_json::{Value, json};
use shared::api::account::handle;

fn token_of(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

async fn invite(t: &TestApp, admin: &Value, email: &str, role: &str) -> common::TestResponse {
    t.authed(handle, "POST", "/orgs/invitations", token_of(admin), &[], Some(json!({"email": email, "role": role})))
        .await
}

async fn set_role(t: &TestApp, admin: &Value, user_id: &str, role: &str) -> common::TestResponse {
    t.authed(handle, "PATCH", &format!("/orgs/members/{user_id}"), token_of(admin), &[], Some(json!({"role": role})))
        .await
}

async fn org_with_member(t: &TestApp, role: &str) -> (Value, String, Value, String) {
    t.org_with_member(role).await
}

#[tokio::test]
async fn deletion_is_scheduled_30_days_out_and_ends_every_session() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("delete").await;
    let wrong = t
        .authed(
            handle,
            "DELETE",
            "/auth/me",
            token_of(&tokens),
            &[],
            Some(json!({"password": "not my password at all"})),
        )
        .await;
    assert_eq!((wrong.status, wrong.body["code"].as_str()), (401, Some("invalid_credentials")));
    assert_eq!(t.me(token_of(&tokens)).await.status, 200, "a wrong password changes nothing");

    let done = t
        .authed(handle, "DELETE", "/auth/me", token_of(&tokens), &[], Some(json!({"password": STRONG_PASSWORD})))
        .await;
    assert_eq!(done.status, 202, "{:?}", done.body);
    let at = shared::time::parse_rfc3339(done.body["deletion_scheduled_at"].as_str().unwrap()).unwrap();
    let days = (at - shared::time::now()).whole_hours();
    assert!((30 * 24 - 1..=30 * 24).contains(&days), "{days}");

    assert_eq!(t.me(token_of(&tokens)).await.status, 401);
    let refresh =
        t.post(shared::api::login::handle, "/auth/refresh", json!({"refresh_token": tokens["refresh_token"]})).await;
    assert_eq!(refresh.status, 401);
    let login = t.login(&email, STRONG_PASSWORD).await;
    assert_eq!((login.status, login.body["code"].as_str()), (403, Some("forbidden")));

    let user = t.user_by_email(&email).await;
    assert_eq!(s(&user, "GSI1PK"), "DELETION");
    assert_eq!(t.emails_to(&email).await.last().unwrap().subject, "Your account is scheduled for deletion");
    let user_id = s(&user, "user_id");
    assert!(
        t.published_events()
            .await
            .iter()
            .any(|(k, m)| k == "account.deletion_scheduled" && m["data"]["user_id"] == user_id.as_str())
    );
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "account.deletion_scheduled" && s(e, "status") == "success"));
}

#[tokio::test]
async fn restore_cancels_a_scheduled_deletion_once() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("restore").await;
    let not_scheduled = t.post(handle, "/auth/me/restore", json!({"email": email, "password": STRONG_PASSWORD})).await;
    assert_eq!((not_scheduled.status, not_scheduled.body["code"].as_str()), (409, Some("conflict")));
    t.authed(handle, "DELETE", "/auth/me", token_of(&tokens), &[], Some(json!({"password": STRONG_PASSWORD}))).await;

    let wrong = t.post(handle, "/auth/me/restore", json!({"email": email, "password": "not my password at all"})).await;
    assert_eq!((wrong.status, wrong.body["code"].as_str()), (401, Some("invalid_credentials")));
    let unknown =
        t.post(handle, "/auth/me/restore", json!({"email": unique_email("ghost"), "password": STRONG_PASSWORD})).await;
    assert_eq!(unknown.body["code"], "invalid_credentials");

    let restored = t.post(handle, "/auth/me/restore", json!({"email": email, "password": STRONG_PASSWORD})).await;
    assert_eq!((restored.status, &restored.body), (200, &json!({"status": "restored"})));
    let user = t.user_by_email(&email).await;
    assert!(!user.contains_key("deletion_scheduled_at") && !user.contains_key("GSI1PK"));
    assert_eq!(t.login(&email, STRONG_PASSWORD).await.status, 200);
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "account.restored"));
    let cancelled =
        t.emails_to(&email).await.into_iter().filter(|e| e.subject == "Your account will not be deleted").count();
    assert_eq!(cancelled, 1, "one deletion-cancelled email");
}

#[tokio::test]
async fn restore_is_no_easier_to_guess_through_than_login() {
    let t = TestApp::with_env(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let (email, tokens) = t.logged_in("restore-guess").await;
    t.authed(handle, "DELETE", "/auth/me", token_of(&tokens), &[], Some(json!({"password": STRONG_PASSWORD}))).await;
    let ip = common::random_ip();
    let t = &t;
    let restore = |password: &str| {
        let body = json!({"email": email, "password": password}).to_string();
        let event = common::http_event_from(&ip, "POST", "/auth/me/restore", &[], Some(&body));
        async move { t.invoke(handle, &event).await }
    };
    // Wrong passwords on restore and on login from one address share one count.
    for _ in 0..3 {
        assert_eq!(restore("not my password at all").await.status, 401);
    }
    for _ in 0..2 {
        assert_eq!(t.login_from(&ip, &email, "not my password at all").await.status, 401);
    }
    let locked = restore(STRONG_PASSWORD).await;
    assert_eq!((locked.status, locked.body["code"].as_str()), (429, Some("rate_limited")), "{:?}", locked.body);
    assert!(locked.header("retry-after").is_some());

    let user = t.user_by_email(&email).await;
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    let failed_restores =
        audit.iter().filter(|e| s(e, "action") == "account.restored" && s(e, "status") == "failure").count();
    assert_eq!(failed_restores, 3, "every wrong restore password is audited");
    assert!(audit.iter().any(|e| s(e, "action") == "auth.lockout"));
    // From the owner's own address, restore still works.
    let restored = t.post(handle, "/auth/me/restore", json!({"email": email, "password": STRONG_PASSWORD})).await;
    assert_eq!(restored.status, 200, "{:?}", restored.body);
}

#[tokio::test]
async fn a_stolen_access_token_cannot_guess_the_password_through_deletion() {
    let t = TestApp::with_env(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let (_, tokens) = t.logged_in("delete-guess").await;
    let ip = common::random_ip();
    let bearer = format!("Bearer {}", token_of(&tokens));
    let delete = |password: &str| {
        let body = json!({"password": password}).to_string();
        let event = common::http_event_from(&ip, "DELETE", "/auth/me", &[("authorization", &bearer)], Some(&body));
        let t = &t;
        async move { t.invoke(handle, &event).await }
    };
    for _ in 0..5 {
        assert_eq!(delete("not my password at all").await.status, 401);
    }
    let locked = delete(STRONG_PASSWORD).await;
    assert_eq!((locked.status, locked.body["code"].as_str()), (429, Some("rate_limited")), "{:?}", locked.body);
    assert_eq!(t.me(token_of(&tokens)).await.status, 200, "nothing was scheduled");
}

#[tokio::test]
async fn an_invitation_admits_one_user_to_the_org_with_its_role() {
    let t = TestApp::new().await;
    let (admin, member_email, member, member_id) = org_with_member(&t, "viewer").await;
    let me = t.me(token_of(&member)).await;
    assert_eq!(me.body["role"], "viewer");
    let admin_me = t.me(token_of(&admin)).await;
    assert_eq!(me.body["org_id"], admin_me.body["org_id"]);
    let org_id = admin_me.body["org_id"].as_str().unwrap();
    let membership = t.item(&format!("ORG#{org_id}"), &format!("MEMBER#{member_id}")).await.unwrap();
    assert_eq!(s(&membership, "role"), "viewer");
    let invitation_email = &t.emails_to(&member_email).await[0];
    assert!(
        invitation_email.body.contains(&format!("{}/accept-invitation?token=", std::env::var("FRONTEND_URL").unwrap()))
    );

    // Used once; unusable again, and unusable for another address.
    let token = invitation_email.token_for("/accept-invitation").unwrap();
    let again = t
        .register(json!({"email": unique_email("second"), "password": STRONG_PASSWORD, "invitation_token": token}))
        .await;
    assert_eq!((again.status, again.body["code"].as_str()), (400, Some("token_invalid")));
    let other = unique_email("invited");
    invite(&t, &admin, &other, "member").await;
    let other_token = t.emails_to(&other).await[0].token_for("/accept-invitation").unwrap();
    let thief = t
        .register(json!({"email": unique_email("thief"), "password": STRONG_PASSWORD, "invitation_token": other_token}))
        .await;
    assert_eq!(thief.body["code"], "token_invalid");

    let audit = t.partition(&format!("AUDIT#{org_id}")).await;
    assert!(audit.iter().any(|e| s(e, "action") == "org.invitation_sent"));
}

#[tokio::test]
async fn members_and_viewers_cannot_invite_or_change_roles() {
    let t = TestApp::new().await;
    for role in ["member", "viewer"] {
        let (_, _, member, member_id) = org_with_member(&t, role).await;
        let invited = invite(&t, &member, &unique_email("nope"), "member").await;
        assert_eq!((invited.status, invited.body["code"].as_str()), (403, Some("forbidden")), "{role}");
        let promoted = set_role(&t, &member, &member_id, "admin").await;
        assert_eq!((promoted.status, promoted.body["code"].as_str()), (403, Some("forbidden")), "{role}");
    }
}

#[tokio::test]
async fn admins_change_roles_but_never_remove_the_last_admin() {
    let t = TestApp::new().await;
    let (admin, _, member, member_id) = org_with_member(&t, "member").await;
    let admin_id = t.me(token_of(&admin)).await.body["user_id"].as_str().unwrap().to_owned();

    let last = set_role(&t, &admin, &admin_id, "member").await;
    assert_eq!((last.status, last.body["code"].as_str()), (409, Some("conflict")));

    let promoted = set_role(&t, &admin, &member_id, "admin").await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.body);
    assert_eq!(promoted.body["role"], "admin");
    assert_eq!(promoted.body["user_id"], member_id.as_str());
    // The promotion applies to the member's live token at once.
    assert_eq!(t.me(token_of(&member)).await.body["role"], "admin");

    let invalid = set_role(&t, &admin, &member_id, "owner").await;
    assert_eq!((invalid.status, invalid.body["code"].as_str()), (400, Some("validation_failed")));
    let stranger = set_role(&t, &admin, "00000000-0000-0000-0000-000000000000", "member").await;
    assert_eq!(stranger.status, 404);
    // A user of another org is invisible.
    let (_, outsider) = t.logged_in("outsider").await;
    let outsider_id = t.me(token_of(&outsider)).await.body["user_id"].as_str().unwrap().to_owned();
    assert_eq!(set_role(&t, &admin, &outsider_id, "viewer").await.status, 404);
}

#[tokio::test]
async fn concurrent_demotions_of_two_admins_leave_one_admin() {
    let t = TestApp::new().await;
    for _ in 0..3 {
        let (admin, _, member, member_id) = org_with_member(&t, "admin").await;
        let admin_id = t.me(token_of(&admin)).await.body["user_id"].as_str().unwrap().to_owned();
        let org_id = t.me(token_of(&admin)).await.body["org_id"].as_str().unwrap().to_owned();
        // Each admin demotes the other at the same moment.
        let demote = |target: &str, by: &Value| {
            let event = common::http_event(
                "PATCH",
                &format!("/orgs/members/{target}"),
                &[("authorization", &format!("Bearer {}", token_of(by)))],
                Some(&json!({"role": "member"}).to_string()),
            );
            common::spawn_invoke(t.app, handle, event)
        };
        let (a, b) = (demote(&member_id, &admin), demote(&admin_id, &member));
        let mut statuses = [a.await.unwrap().0, b.await.unwrap().0];
        statuses.sort();
        // One wins; the other is refused, either as the last admin (409) or because the
        // winner already demoted it (403).
        assert_eq!(statuses[0], 200, "{statuses:?}");
        assert!(statuses[1] == 409 || statuses[1] == 403, "{statuses:?}");
        let org = t.item(&format!("ORG#{org_id}"), "ORG").await.unwrap();
        assert_eq!(s(&org, "admin_count"), "1");
        let admins = t
            .partition(&format!("ORG#{org_id}"))
            .await
            .into_iter()
            .filter(|i| s(i, "SK").starts_with("MEMBER#") && s(i, "role") == "admin")
            .count();
        assert_eq!(admins, 1);
    }
}

async fn invitations(t: &TestApp, admin: &Value) -> common::TestResponse {
    t.authed(handle, "GET", "/orgs/invitations", token_of(admin), &[], None).await
}

async fn revoke(t: &TestApp, admin: &Value, invitation_id: &str) -> common::TestResponse {
    t.authed(handle, "DELETE", &format!("/orgs/invitations/{invitation_id}"), token_of(admin), &[], None).await
}

async fn schedule_deletion(t: &TestApp, tokens: &Value) {
    let deleted =
        t.authed(handle, "DELETE", "/auth/me", token_of(tokens), &[], Some(json!({"password": STRONG_PASSWORD}))).await;
    assert_eq!(deleted.status, 202, "{:?}", deleted.body);
}

async fn join(t: &TestApp, email: &str) -> common::TestResponse {
    let token = t.emails_to(email).await[0].token_for("/accept-invitation").expect("invitation link");
    t.register(json!({"email": email, "password": STRONG_PASSWORD, "invitation_token": token})).await
}

#[tokio::test]
async fn admins_list_and_revoke_pending_invitations() {
    let t = TestApp::new().await;
    let (admin, _, viewer, _) = org_with_member(&t, "viewer").await;
    let admin_id = t.me(token_of(&admin)).await.body["user_id"].as_str().unwrap().to_owned();
    let (kept, revoked) = (unique_email("kept"), unique_email("revoked"));
    assert_eq!(invite(&t, &admin, &kept, "member").await.status, 202);
    assert_eq!(invite(&t, &admin, &revoked, "viewer").await.status, 202);

    let listed = invitations(&t, &admin).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the used invitation is not pending: {items:?}");
    assert_eq!(items[0]["email"], revoked.as_str(), "newest first");
    assert_eq!((items[0]["role"].as_str(), items[0]["invited_by"].as_str()), (Some("viewer"), Some(admin_id.as_str())));
    assert!(items[0]["expires_at"].is_string() && items[0]["invitation_id"].is_string());
    let revoked_id = items[0]["invitation_id"].as_str().unwrap().to_owned();

    let refused = invitations(&t, &viewer).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(revoke(&t, &viewer, &revoked_id).await.status, 403);
    let (_, outsider) = t.logged_in("outsider").await;
    assert_eq!(revoke(&t, &outsider, &revoked_id).await.status, 404, "another org's invitation is not found");

    assert_eq!(revoke(&t, &admin, &revoked_id).await.status, 204);
    assert_eq!(revoke(&t, &admin, &revoked_id).await.status, 404);
    let rest = invitations(&t, &admin).await.body["items"].as_array().unwrap().clone();
    assert_eq!(rest.iter().map(|i| i["email"].as_str().unwrap()).collect::<Vec<_>>(), [kept.as_str()]);
    let late = join(&t, &revoked).await;
    assert_eq!((late.status, late.body["code"].as_str()), (400, Some("token_invalid")));
    assert_eq!(join(&t, &kept).await.status, 202);
    assert!(invitations(&t, &admin).await.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_invitation_stops_working_when_its_sender_is_no_longer_an_active_admin() {
    let t = TestApp::new().await;
    let (first, _, second, second_id) = org_with_member(&t, "admin").await;
    let (after_demotion, after_deletion) = (unique_email("demoted-sender"), unique_email("leaving-sender"));

    // Sent by an admin who is then demoted.
    assert_eq!(invite(&t, &second, &after_demotion, "member").await.status, 202);
    assert_eq!(set_role(&t, &first, &second_id, "member").await.status, 200);
    let refused = join(&t, &after_demotion).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (400, Some("token_invalid")));

    // Sent by an admin who then schedules their account for deletion.
    assert_eq!(set_role(&t, &first, &second_id, "admin").await.status, 200);
    assert_eq!(invite(&t, &second, &after_deletion, "member").await.status, 202);
    // Both count again now that their sender is an admin again.
    assert_eq!(invitations(&t, &first).await.body["items"].as_array().unwrap().len(), 2);
    schedule_deletion(&t, &second).await;
    assert!(invitations(&t, &first).await.body["items"].as_array().unwrap().is_empty(), "no longer pending");
    let refused = join(&t, &after_deletion).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (400, Some("token_invalid")));
}

#[tokio::test]
async fn an_admin_scheduled_for_deletion_does_not_count_as_the_remaining_admin() {
    let t = TestApp::new().await;
    let (first, _, second, _) = org_with_member(&t, "admin").await;
    let first_id = t.me(token_of(&first)).await.body["user_id"].as_str().unwrap().to_owned();
    schedule_deletion(&t, &second).await;
    let refused = set_role(&t, &first, &first_id, "member").await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("conflict")), "{:?}", refused.body);
    assert_eq!(t.me(token_of(&first)).await.body["role"], "admin");
}

#[tokio::test]
async fn the_org_view_lists_members_to_admins_only() {
    let t = TestApp::new().await;
    let (admin, member_email, member, member_id) = org_with_member(&t, "member").await;
    let admin_me = t.me(token_of(&admin)).await.body;
    let seen = t.authed(handle, "GET", "/orgs/me", token_of(&admin), &[], None).await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    assert_eq!(seen.body["org_id"], admin_me["org_id"]);
    assert!(seen.body["name"].is_string() && seen.body["created_at"].is_string());
    let members = seen.body["members"].as_array().unwrap();
    let rows: Vec<(&str, &str, &str)> = members
        .iter()
        .map(|m| (m["user_id"].as_str().unwrap(), m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            (admin_me["user_id"].as_str().unwrap(), admin_me["email"].as_str().unwrap(), "admin"),
            (member_id.as_str(), member_email.as_str(), "member")
        ],
        "longest-standing first"
    );
    assert!(members.iter().all(|m| m.get("full_name").is_some() && m["joined_at"].is_string()));

    let as_member = t.authed(handle, "GET", "/orgs/me", token_of(&member), &[], None).await;
    assert_eq!(as_member.status, 200);
    assert_eq!(as_member.body["org_id"], admin_me["org_id"]);
    assert!(as_member.body.get("members").is_none(), "members are for admins: {:?}", as_member.body);
    let nobody = t.invoke(handle, &common::http_event("GET", "/orgs/me", &[], None)).await;
    assert_eq!((nobody.status, nobody.body["code"].as_str()), (401, Some("unauthorized")));
}
