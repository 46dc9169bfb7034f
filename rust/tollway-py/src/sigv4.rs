//! Python face of SigV4 signing (tollway-core `sigv4`): a method of the `Target` a provider
//! already holds, so providers need no import of the extension. Conversions only.

use pyo3::prelude::*;
use tollway_core::sigv4::{sign_headers, AwsCredentials};

use crate::engine::Target;

#[pymethods]
impl Target {
    /// The headers that sign a request to this target's cloud (`authorization`,
    /// `x-amz-date`, `x-amz-security-token`); `headers` are those that will be sent.
    #[pyo3(signature = (method, url, headers, body, region, service, access_key_id, secret_access_key, session_token=None, unix_time=None))]
    #[allow(clippy::too_many_arguments)]
    fn sigv4_headers(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
        region: &str,
        service: &str,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
        unix_time: Option<f64>,
    ) -> PyResult<Vec<(String, String)>> {
        let creds = AwsCredentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: session_token.map(str::to_owned),
        };
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        sign_headers(
            method, url, &headers, body, region, service, &creds, unix_time,
        )
        .map_err(|e| crate::errors::invalid(e.0))
    }
}
