//! Tenant-isolation attacks through the E2B door, with auth on, over raw HTTP: no key or a
//! forged access token is refused, and one caller cannot see, connect to, run in, read, list or
//! kill another's sandbox, while the owner's same call works.

use super::*;

use crate::e2b::{
    assert_gone, block_on, create, envelopes, http, kill, start, ALICE_KEY, MALLORY_KEY,
};

#[test]
fn no_key_is_refused() {
    block_on(async {
        let create = http(
            "POST",
            "/v2/sandboxes",
            &[("content-type", "application/json")],
            json!({"templateID": "base"}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(create.status, 401, "{}", create.text());
        assert_eq!(create.json()["code"], 401);
        let wrong = http(
            "GET",
            "/v2/sandboxes",
            &[("x-api-key", "e2b_0000")],
            Vec::new(),
        )
        .await;
        assert_eq!(wrong.status, 401, "{}", wrong.text());

        let (id, _) = create_for_alice().await;
        let bare = start(&id, &[], "echo hi").await;
        assert_eq!(
            bare.status,
            401,
            "envd without credentials: {}",
            bare.text()
        );
        let forged = start(
            &id,
            &[("x-access-token", "0123456789abcdef0123456789abcdef")],
            "echo hi",
        )
        .await;
        assert_gone(&forged, "envd with a forged access token");
        kill(ALICE_KEY, &id).await;
    });
}

async fn create_for_alice() -> (String, String) {
    create(ALICE_KEY).await
}

#[test]
fn other_callers_sandbox_is_invisible() {
    block_on(async {
        let (victim, _) = create(ALICE_KEY).await;
        let mallory = [("x-api-key", MALLORY_KEY)];
        let info = http("GET", &format!("/sandboxes/{victim}"), &mallory, Vec::new()).await;
        assert_eq!(
            info.status,
            404,
            "mallory reads alice's sandbox: {}",
            info.text()
        );
        for path in ["/v2/sandboxes", "/sandboxes"] {
            let listed = http("GET", path, &mallory, Vec::new()).await;
            assert_eq!(listed.status, 200);
            assert!(
                !listed.text().contains(&victim),
                "mallory's {path} lists alice's sandbox: {}",
                listed.text()
            );
        }
        let connect = http(
            "POST",
            &format!("/v2/sandboxes/{victim}/connect"),
            &[
                ("x-api-key", MALLORY_KEY),
                ("content-type", "application/json"),
            ],
            json!({"timeout": 60}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(
            connect.status,
            404,
            "mallory connects to alice's sandbox: {}",
            connect.text()
        );
        assert!(!connect.text().contains("envdAccessToken"));
        let timeout = http(
            "POST",
            &format!("/sandboxes/{victim}/timeout"),
            &[
                ("x-api-key", MALLORY_KEY),
                ("content-type", "application/json"),
            ],
            json!({"timeout": 1}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(
            timeout.status,
            404,
            "mallory shortens alice's sandbox: {}",
            timeout.text()
        );
        // Alice still sees it, so the 404s above were about mallory.
        let own = http(
            "GET",
            &format!("/sandboxes/{victim}"),
            &[("x-api-key", ALICE_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(own.status, 200, "{}", own.text());
        assert_eq!(own.json()["sandboxID"], victim.as_str());
        assert_eq!(kill(ALICE_KEY, &victim).await, 204);
    });
}

#[test]
fn other_caller_cannot_kill() {
    block_on(async {
        let (victim, token) = create(ALICE_KEY).await;
        assert_eq!(
            kill(MALLORY_KEY, &victim).await,
            404,
            "mallory kills alice's sandbox"
        );
        let v2 = http(
            "DELETE",
            &format!("/v2/sandboxes/{victim}"),
            &[("x-api-key", MALLORY_KEY)],
            Vec::new(),
        )
        .await;
        assert_eq!(v2.status, 404);
        let health = http(
            "GET",
            "/health",
            &[("e2b-sandbox-id", &victim), ("x-access-token", &token)],
            Vec::new(),
        )
        .await;
        assert_eq!(
            health.status,
            204,
            "alice's sandbox survived: {}",
            health.text()
        );
        assert_eq!(kill(ALICE_KEY, &victim).await, 204);
        let after = http(
            "GET",
            "/health",
            &[("e2b-sandbox-id", &victim), ("x-access-token", &token)],
            Vec::new(),
        )
        .await;
        assert_gone(&after, "alice's killed sandbox");
    });
}

#[test]
fn other_caller_cannot_run_or_read() {
    block_on(async {
        let (victim, victim_token) = create(ALICE_KEY).await;
        let (own, own_token) = create(MALLORY_KEY).await;
        let planted = http(
            "POST",
            "/files?path=secret.txt",
            &[
                ("e2b-sandbox-id", &victim),
                ("x-access-token", &victim_token),
                ("content-type", "application/octet-stream"),
            ],
            b"alice's secret".to_vec(),
        )
        .await;
        assert_eq!(planted.status, 200, "{}", planted.text());

        // Mallory's own token works on mallory's sandbox: the refusals below are about alice's.
        let mine = start(&own, &[("x-access-token", &own_token)], "echo mine").await;
        assert_eq!(mine.status, 200, "{}", mine.text());
        assert!(envelopes(&mine.body).len() >= 3);

        let with_own_token =
            start(&victim, &[("x-access-token", &own_token)], "cat secret.txt").await;
        assert_gone(&with_own_token, "mallory's token on alice's sandbox");
        let with_key = start(&victim, &[("x-api-key", MALLORY_KEY)], "cat secret.txt").await;
        assert_gone(&with_key, "mallory's API key on alice's sandbox");
        for credentials in [
            ("x-access-token", own_token.as_str()),
            ("x-api-key", MALLORY_KEY),
        ] {
            let read = http(
                "GET",
                "/files?path=secret.txt",
                &[("e2b-sandbox-id", &victim), credentials],
                Vec::new(),
            )
            .await;
            assert_gone(&read, "mallory reads alice's file");
            assert!(!read.text().contains("secret"), "{}", read.text());
            let stat = http(
                "POST",
                "/filesystem.Filesystem/ListDir",
                &[
                    ("e2b-sandbox-id", &victim),
                    ("content-type", "application/json"),
                    credentials,
                ],
                json!({"path": "."}).to_string().into_bytes(),
            )
            .await;
            assert_gone(&stat, "mallory lists alice's workspace");
        }
        // The file is still alice's alone, and unchanged.
        let read = http(
            "GET",
            "/files?path=secret.txt",
            &[
                ("e2b-sandbox-id", &victim),
                ("x-access-token", &victim_token),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(read.status, 200);
        assert_eq!(read.body, b"alice's secret");
        let seen_by_mallory = start(
            &own,
            &[("x-access-token", &own_token)],
            "cat secret.txt 2>&1; true",
        )
        .await;
        let text: String = envelopes(&seen_by_mallory.body)
            .iter()
            .filter_map(|(_, m)| m["event"]["data"]["stdout"].as_str().map(str::to_string))
            .collect();
        assert!(!text.is_empty(), "cat said something");
        assert_ne!(
            text, "YWxpY2UncyBzZWNyZXQ=",
            "mallory's box holds alice's file"
        );
        assert_eq!(kill(ALICE_KEY, &victim).await, 204);
        assert_eq!(kill(MALLORY_KEY, &own).await, 204);
    });
}
