//! Tenant-isolation attacks through the Judge0 door: one caller's submissions are invisible to
//! another (a token of another caller is as unknown as a made-up one, alone or in a batch), one
//! caller's rate limit is its own, and `additional_files` can neither leave the workspace nor
//! make the server unpack without bound.

use super::*;

use crate::judge0::{judge0, ALICE, CAROL, MALLORY};

/// A zip archive of `entries`, deflated.
fn zip_of(entries: &[(&str, &[u8])]) -> String {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        zip.start_file(*name, options).expect("start a file");
        zip.write_all(data).expect("write it");
    }
    let bytes = zip.finish().expect("finish").into_inner();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Alice's finished submission's token.
async fn alices_submission() -> String {
    let done = judge0(
        "POST",
        "/submissions?wait=true&fields=token,stdout",
        ALICE,
        Some(json!({"source_code": "print('alice secret')", "language_id": 71})),
    )
    .await;
    assert_eq!(done.status, 201, "{}", done.text());
    let done = done.json();
    assert_eq!(done["stdout"], "alice secret\n", "{done}");
    done["token"].as_str().expect("a token").to_string()
}

#[test]
fn another_callers_token_is_unknown() {
    crate::judge0::server();
    attack(async {
        let token = alices_submission().await;
        let mine = judge0("GET", &format!("/submissions/{token}"), ALICE, None).await;
        assert_eq!(mine.status, 200);

        let theirs = judge0(
            "GET",
            &format!("/submissions/{token}?fields=*"),
            MALLORY,
            None,
        )
        .await;
        assert_eq!(theirs.status, 404, "{}", theirs.text());
        assert!(!theirs.text().contains("alice secret"));
        // Word for word what a token nobody has gets: nothing tells that the token exists.
        let made_up = "11111111-1111-4111-8111-111111111111";
        let unknown = judge0("GET", &format!("/submissions/{made_up}"), MALLORY, None).await;
        assert_eq!(unknown.status, 404);
        assert_eq!(
            theirs.text().replace(&token, "T"),
            unknown.text().replace(made_up, "T")
        );

        let batch = judge0(
            "GET",
            &format!("/submissions/batch?tokens={token},{token}&fields=*"),
            MALLORY,
            None,
        )
        .await;
        assert_eq!(batch.status, 200);
        assert_eq!(batch.json(), json!({"submissions": [null, null]}));

        // Alice still sees hers, whole.
        let still = judge0("GET", &format!("/submissions/{token}"), ALICE, None)
            .await
            .json();
        assert_eq!(still["stdout"], "alice secret\n", "{still}");
    });
}

#[test]
fn a_callers_rate_limit_is_its_own() {
    crate::judge0::server();
    attack(async {
        let hello = json!({"source_code": "print(1)", "language_id": 71});
        let mut refused = None;
        for _ in 0..4 {
            let answer = judge0("POST", "/submissions", CAROL, Some(hello.clone())).await;
            if answer.status == 429 {
                refused = Some(answer);
                break;
            }
            assert_eq!(answer.status, 201, "{}", answer.text());
        }
        let refused = refused.expect("carol's burst of 2 runs out");
        assert!(refused.headers.contains_key("retry-after"));
        assert!(refused.json()["error"]
            .as_str()
            .is_some_and(|m| m.contains("rate limit")));
        // Carol's bucket is hers: alice is not slowed by it.
        for _ in 0..4 {
            let answer = judge0("GET", "/statuses", ALICE, None).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        let answer = judge0("POST", "/submissions", ALICE, Some(hello)).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
    });
}

#[test]
fn additional_files_stay_in_the_workspace_and_are_bounded() {
    crate::judge0::server();
    attack(async {
        for name in ["../../etc/PWNED", "/tmp/PWNED", "a/../../PWNED"] {
            let answer = judge0(
                "POST",
                "/submissions",
                MALLORY,
                Some(json!({"source_code": "print(1)", "language_id": 71,
                    "additional_files": zip_of(&[(name, b"x")])})),
            )
            .await;
            assert_eq!(answer.status, 422, "{name}: {}", answer.text());
            let message = answer.json()["additional_files"][0]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                message.contains("outside the working directory"),
                "{name}: {message}"
            );
        }
        // 64 MiB of zeros deflate to a few dozen KiB: unpacking stops at the bound.
        let bomb = zip_of(&[("zeros", &vec![0u8; 64 << 20])]);
        assert!(bomb.len() < 1 << 20, "the archive itself is small");
        let answer = judge0(
            "POST",
            "/submissions",
            MALLORY,
            Some(json!({"source_code": "print(1)", "language_id": 71, "additional_files": bomb})),
        )
        .await;
        assert_eq!(answer.status, 422, "{}", answer.text());
        assert!(answer.json()["additional_files"][0]
            .as_str()
            .is_some_and(|m| m.contains("max_extract_size")));
        // A file the program may have, it has, and only in its own workspace.
        let done = judge0(
            "POST",
            "/submissions?wait=true&fields=stdout,status",
            MALLORY,
            Some(
                json!({"source_code": "import os\nprint(open('in/x').read(), os.getcwd())",
                "language_id": 71, "additional_files": zip_of(&[("in/x", b"mine")])}),
            ),
        )
        .await
        .json();
        assert_eq!(done["stdout"], "mine /workspace\n", "{done}");
    });
}
