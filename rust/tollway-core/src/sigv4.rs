//! AWS Signature Version 4 for provider calls (Bedrock), with AWS's own `aws-sigv4` crate.
//!
//! Signing is on the request path, so it is one call from Python: the URL, the headers that
//! will be sent and the body in, the headers to add (`authorization`, `x-amz-date`,
//! `x-amz-security-token`) out. No credential is ever put in an error message.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// Long-term or temporary AWS credentials.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsCredentials(..)") // never print a secret
    }
}

/// What cannot be signed: a malformed URL or header. The message holds no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError(pub String);

/// The headers that sign a request to `service` in `region` at `unix_s` (now when `None`).
/// `headers` are the ones that will be sent (names lower-case); each is signed.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    region: &str,
    service: &str,
    creds: &AwsCredentials,
    unix_s: Option<f64>,
) -> Result<Vec<(String, String)>, SignError> {
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "tollway",
    )
    .into();
    let time = match unix_s {
        Some(s) if s >= 0.0 => UNIX_EPOCH + Duration::from_secs_f64(s),
        _ => UNIX_EPOCH + Duration::from_millis(crate::clock::Clock::System.wall_ms()),
    };
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|_| SignError("the request URL or a header cannot be signed".to_owned()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|_| SignError("the request cannot be signed".to_owned()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
        }
    }

    #[test]
    fn matches_the_published_get_vanilla_example() {
        // AWS's SigV4 test suite, `get-vanilla`: 2015-08-30T12:36:00Z, us-east-1, service.
        let out = sign_headers(
            "GET",
            "https://example.amazonaws.com/",
            &[],
            b"",
            "us-east-1",
            "service",
            &creds(None),
            Some(1_440_938_160.0),
        )
        .unwrap();
        let auth = &out.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert!(out.contains(&("x-amz-date".into(), "20150830T123600Z".into())));
    }

    #[test]
    fn a_session_token_is_sent_and_signed_and_debug_hides_secrets() {
        let out = sign_headers(
            "POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/a.b%3A0/converse",
            &[("content-type", "application/json")],
            b"{}",
            "us-east-1",
            "bedrock",
            &creds(Some("TOKEN")),
            None,
        )
        .unwrap();
        assert!(out.contains(&("x-amz-security-token".into(), "TOKEN".into())));
        let auth = &out.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(auth.contains("content-type;host;x-amz-date;x-amz-security-token"));
        assert!(!format!("{:?}", creds(Some("TOKEN"))).contains("EXAMPLE"));
    }
}
