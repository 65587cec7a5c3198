//! The fault matrix: every way a registry, a data endpoint, a token server or a TLS peer can
//! misbehave that edgepull is tested against, each cell one test with an exact outcome.
//!
//! Cells drive the in-process fake ACR (`edgepull_testkit::FakeRegistry`, misbehaviour from
//! its `Knobs`) through the library (`edgepull::app::puller_blocking`, as `tests/common`
//! does). "ok" means the pull succeeds and the store verifies; a category is the exit
//! category (`edgepull::exit::Category`, exit code in brackets) the pull fails with; quoted
//! text is a fragment of the error chain. Every cell runs: none may be `#[ignore]`d.
//!
//! `matrix_table_lists_every_cell_once` checks that every row below is a test of this file
//! and every test is a row, and prints the table (`cargo test --test fault_matrix -- --nocapture
//! matrix_table`).
//!
//! <!-- matrix:start -->
//! | cell | expected outcome | status |
//! | --- | --- | --- |
//! | `reset_mid_body_resumes_with_one_range_request` | ok; one reconnect with `Range: bytes=600000-`; eastus sends exactly the blob sizes; 2 redirects for the layer | pass |
//! | `stall_mid_body_times_out_and_resumes_where_it_stalled` | ok after the 1 s idle timeout; second request `Range: bytes=300000-` | pass |
//! | `trickle_below_the_minimum_rate_reconnects_and_finishes` | ok within 30 s (not the 150 s the trickle needs); a ranged reconnect from offset > 0 | pass |
//! | `short_body_resumes_with_range` | ok; chunked body ends cleanly at 200000 → `Range: bytes=200000-` → 206 | pass |
//! | `long_body_with_content_length_stops_at_the_descriptor_size` | ok; each blob stored at its descriptor size; one GET per blob (no refetch) | pass |
//! | `long_chunked_body_stops_at_the_descriptor_size` | ok; same, body without `Content-Length` | pass |
//! | `content_encoding_gzip_is_refused` | Registry (76) "Content-Encoding \"gzip\"", "raw bytes"; no blob, no image | pass |
//! | `content_encoding_identity_is_accepted` | ok | pass |
//! | `manifest_500_is_retried_then_succeeds` | ok; login served 500 once | pass |
//! | `manifest_502_is_retried_then_succeeds` | ok; login served 502 once | pass |
//! | `manifest_503_is_retried_then_succeeds` | ok; login served 503 once | pass |
//! | `manifest_504_is_retried_then_succeeds` | ok; login served 504 once | pass |
//! | `manifest_408_is_retried_then_succeeds` | ok; login served 408 once | pass |
//! | `persistent_500_gives_up_after_three_attempts` | Transient (75) "answered 500"; exactly 3 manifest GETs | pass |
//! | `retry_after_in_seconds_is_honoured` | ok; 429 `Retry-After: 2` → ≥ 2 s before the next request | pass |
//! | `retry_after_as_an_http_date_is_honoured` | ok; 429 `Retry-After: <now + 3 s>` → ≥ 1.5 s before the next request | pass |
//! | `data_endpoint_503_gets_a_fresh_redirect_and_succeeds` | ok; eastus 503 then 200; 2 redirects for that blob | pass |
//! | `data_endpoint_429_with_retry_after_is_honoured` | ok; eastus 429 `Retry-After: 1` → ≥ 1 s later a fresh redirect | pass |
//! | `expired_signed_link_403_gets_a_fresh_redirect_and_succeeds` | ok; eastus 403 "Signed expiry time has passed." then 200 via a second redirect | pass |
//! | `invalid_token_mid_pull_reauthenticates_once` | ok; one 401 `invalid_token` on a blob GET → exactly one new token request | pass |
//! | `blob_unknown_at_the_login_server_is_a_registry_error` | Registry (76) "not found", names the digest; no data endpoint request | pass |
//! | `blob_missing_at_the_data_endpoint_is_a_registry_error` | Registry (76) "not found at" the data endpoint, names the digest; not retried | pass |
//! | `range_answered_416_restarts_from_zero` | ok; `Range: bytes=300000-` → 416 → a GET without Range → 200 | pass |
//! | `content_range_not_matching_is_refused_and_the_partial_is_kept` | Integrity (65) "starts at byte 0, but byte 300000 was requested"; checkpoint kept; next pull resumes with `Range: bytes=300000-` | pass |
//! | `partial_content_without_content_range_is_refused` | Integrity (65) "without a Content-Range header" | pass |
//! | `full_200_to_a_range_request_restarts_from_zero` | ok; `bytes_refetched` = 400000 | pass |
//! | `blob_digest_mismatch_leaves_nothing_visible` | Integrity (65) names the digest; no blob file, no ingest, no image | pass |
//! | `docker_content_digest_mismatch_is_refused` | Integrity (65) "Docker-Content-Digest"; no data endpoint request | pass |
//! | `malformed_docker_content_digest_is_refused` | Registry (76) "malformed Docker-Content-Digest header" | pass |
//! | `manifest_by_digest_with_other_content_is_refused` | Integrity (65) "the requested digest" | pass |
//! | `document_with_manifests_and_layers_is_refused` | Integrity (65) "CVE-2021-41190" | pass |
//! | `index_body_under_a_manifest_content_type_is_refused` | Integrity (65) "Content-Type" | pass |
//! | `nested_index_is_refused` | Registry (76) "nested indexes are not supported" | pass |
//! | `index_entry_size_mismatch_is_refused` | Integrity (65) "index says manifest … has N bytes" | pass |
//! | `schema1_manifest_is_refused` | Integrity (65) "schema 1" | pass |
//! | `huge_manifest_with_content_length_is_refused` | Integrity (65) "larger than 4194304 bytes" | pass |
//! | `huge_chunked_manifest_is_refused_while_reading` | Integrity (65) "larger than 4194304 bytes" | pass |
//! | `zero_size_layer_is_refused` | Integrity (65) "size 0"; no data endpoint request | pass |
//! | `negative_size_layer_is_refused` | Integrity (65) "-5"; no data endpoint request | pass |
//! | `size_larger_than_the_blob_is_refused` | Integrity (65) "Content-Length 10000 is less than the 10001 bytes expected"; no blob, no image | pass |
//! | `size_smaller_than_the_blob_is_refused` | Integrity (65): the first 9999 bytes are read (the descriptor size), their digest does not match, "was not stored"; no blob, no image | pass |
//! | `size_u64_max_is_refused_and_nothing_is_kept` | Integrity (65) "does not match the 18446744073709551615 bytes" (today at the first response); nothing kept | pass |
//! | `size_sum_overflow_is_refused_before_any_download` | Integrity (65) names the sizes; no data endpoint request | pass |
//! | `foreign_urls_on_a_layer_are_never_fetched` | ok from the registry; the `urls` listener and path see 0 connections | pass |
//! | `foreign_layer_absent_from_the_registry_fails_without_touching_its_urls` | Registry (76) "not found"; the `urls` listener sees 0 connections | pass |
//! | `zstd_layer_is_stored_like_any_blob` | ok; blob stored verbatim with its media type in the manifest | pass |
//! | `non_distributable_layer_is_stored_like_any_blob` | ok; blob stored verbatim (fetched from the registry only) | pass |
//! | `certificate_for_the_wrong_name_is_refused` | Transient (75) "invalid peer certificate", "not valid for name"; no request reaches any server | pass |
//! | `expired_certificate_is_refused` | Transient (75) "certificate" / "expired"; no request reaches any server | pass |
//! | `token_reply_over_one_mebibyte_is_refused` | Auth (77) "exceeds the 1048576-byte limit" | pass |
//! | `token_reply_with_malformed_json_is_refused` | Auth (77) "unusable reply", "not JSON" | pass |
//! | `token_reply_without_a_token_is_refused` | Auth (77) "neither \"token\" nor \"access_token\"" | pass |
//! | `token_expires_in_zero_uses_the_default_lifetime` | ok; one token request | pass |
//! | `token_expires_in_negative_uses_the_default_lifetime` | ok; one token request | pass |
//! | `token_expires_in_huge_is_clamped` | ok; one token request (no overflow) | pass |
//! <!-- matrix:end -->

mod common;
mod fault_matrix {
    pub(crate) mod auth_tls;
    pub(crate) mod content;
    pub(crate) mod helpers;
    pub(crate) mod transport;
}

/// Every row of the matrix is a test of this file, every test is a row, once each, and no
/// cell is ignored. Prints the table.
#[test]
fn matrix_table_lists_every_cell_once() {
    let doc = include_str!("fault_matrix.rs");
    let sources = [
        include_str!("fault_matrix/transport.rs"),
        include_str!("fault_matrix/content.rs"),
        include_str!("fault_matrix/auth_tls.rs"),
    ];
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.contains("matrix:start"))
        .skip(3)
        .take_while(|l| !l.contains("matrix:end"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect();
    let mut rows: Vec<(String, String)> = Vec::new();
    for line in &table {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "malformed row: {line}");
        rows.push((cells[0].trim_matches('`').to_string(), cells[2].to_string()));
    }
    // The name of every #[test] in the cell files.
    let mut tests: Vec<String> = Vec::new();
    for src in sources {
        assert!(
            !src.contains("#[ignore"),
            "a fault-matrix cell is ignored: every cell must run"
        );
        let mut lines = src.lines().map(str::trim);
        while let Some(l) = lines.next() {
            if l != "#[test]" {
                continue;
            }
            let name = lines
                .find_map(|next| next.strip_prefix("fn "))
                .and_then(|rest| rest.split('(').next())
                .unwrap_or_default();
            tests.push(name.to_string());
        }
    }
    for (name, status) in &rows {
        assert!(tests.contains(name), "matrix row {name} has no test");
        assert_eq!(status, "pass", "{name}: every cell runs and passes");
        assert_eq!(rows.iter().filter(|(r, _)| r == name).count(), 1, "{name} twice");
    }
    for name in &tests {
        assert!(
            rows.iter().any(|(r, _)| r == name),
            "test {name} is not in the matrix"
        );
    }
    assert!(rows.len() >= 40, "{} cells", rows.len());
    println!("{}", table.join("\n"));
}
