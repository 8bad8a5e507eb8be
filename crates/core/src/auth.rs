//! Credentials: where a token is found in an upgrade request, and HS256 JWT verification.
//! Tokens are never logged or put in error messages.

use std::sync::Arc;

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, COOKIE};
use hyper::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Where a credential came from (a bad cookie token is ignored unless auth is required,
/// because browsers keep sending stale cookies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    AuthorizationJwt,
    AuthorizationBearer,
    /// Another `Authorization` scheme (an API key): for the app's resolver.
    AuthorizationOther,
    Cookie,
    Query,
}

/// A credential found in the request: a JWT, or anything else for the app's resolver.
#[derive(Debug, Clone)]
pub struct Credential {
    pub token: String,
    pub source: TokenSource,
}

impl Credential {
    /// Payload JWTs have three dot-separated parts; API keys and the like do not.
    pub fn is_jwt(&self) -> bool {
        self.token.split('.').count() == 3
    }
}

/// The authenticated user of a socket, from verified JWT claims or the app's resolver.
#[derive(Debug, Clone)]
pub struct UserClaims {
    /// User id as text (rooms, lookups).
    pub id: String,
    /// User id as JSON (a number stays a number on the wire).
    pub id_json: String,
    /// Auth collection slug.
    pub collection: String,
    /// Session id (`sid`), when the token carries one.
    pub sid: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// Every claim as JSON text, for the app.
    pub raw: Arc<str>,
}

impl UserClaims {
    /// Builds claims from a JSON object with at least `id` and `collection`.
    pub fn from_json(json: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(borrow)]
            id: &'a RawValue,
            collection: String,
            #[serde(default)]
            sid: Option<String>,
            #[serde(default)]
            exp: Option<f64>,
        }
        let f: Fields = serde_json::from_str(json).ok()?;
        let id_json = f.id.get().to_string();
        let id = if id_json.starts_with('"') {
            serde_json::from_str::<String>(&id_json).ok()?
        } else {
            id_json.clone()
        };
        if id.is_empty() || f.collection.is_empty() {
            return None;
        }
        Some(Self {
            id,
            id_json,
            collection: f.collection,
            sid: f.sid,
            exp: f.exp.map(|e| e.max(0.0) as u64),
            raw: Arc::from(json),
        })
    }

    /// The room every socket of this user joins.
    pub fn user_room(&self) -> String {
        format!("user:{}:{}", self.collection, self.id)
    }

    /// `{"id":…,"collection":…}` as JSON text.
    pub fn summary_json(&self) -> String {
        format!("{{\"id\":{},\"collection\":{}}}", self.id_json, crate::protocol::json_str(&self.collection))
    }

    /// Same user (collection and id).
    pub fn same_user(&self, other: &UserClaims) -> bool {
        self.id == other.id && self.collection == other.collection
    }
}

/// Why a JWT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no key is configured for JWTs")]
    NoKey,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed (HS256 only)")]
    Algorithm,
    #[error("authVersion header missing or wrong")]
    AuthVersion,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf or iat in the future)")]
    NotYetValid,
    #[error("claims lack id or collection")]
    Claims,
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Zero: Payload signs and checks its
/// tokens with the same clock as this server (one process), and its own check tolerates none.
pub const CLOCK_LEEWAY_S: u64 = 0;

/// Verifies HS256 JWTs with the configured key.
pub struct JwtVerifier {
    key: Option<DecodingKey>,
    validation: Validation,
    auth_version: Option<u64>,
}

impl JwtVerifier {
    /// A verifier for `key` (none: every JWT is refused with `NoKey`).
    pub fn new(key: Option<&[u8]>, auth_version: Option<u64>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = CLOCK_LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        Self { key: key.map(DecodingKey::from_secret), validation, auth_version }
    }

    /// Checks the header (alg, authVersion), signature and expiry; returns the claims.
    pub fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        let key = self.key.as_ref().ok_or(AuthError::NoKey)?;
        let header_b64 = token.split('.').next().ok_or(AuthError::Malformed)?;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_b64.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed)?;
        let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::Algorithm);
        }
        if let Some(want) = self.auth_version {
            if header.get("authVersion").and_then(|v| v.as_u64()) != Some(want) {
                return Err(AuthError::AuthVersion);
            }
        }
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::Signature,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                _ => AuthError::Malformed,
            }
        })?;
        // A token issued in the future was not issued by this clock (jsonwebtoken checks exp and
        // nbf, not iat).
        #[derive(Deserialize)]
        struct Issued {
            #[serde(default)]
            iat: Option<f64>,
        }
        let issued: Issued = serde_json::from_str(data.claims.get()).map_err(|_| AuthError::Claims)?;
        if issued.iat.is_some_and(|iat| iat > (now_s() + CLOCK_LEEWAY_S) as f64) {
            return Err(AuthError::NotYetValid);
        }
        let claims = UserClaims::from_json(data.claims.get()).ok_or(AuthError::Claims)?;
        if claims.exp.is_none() {
            // Payload always sets exp; a token that never expires is not one we issued.
            return Err(AuthError::Claims);
        }
        Ok(claims)
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Every credential of the request, in order of precedence: `Authorization: JWT …`,
/// `Authorization: Bearer …` (or another `Authorization` value, for the app's resolver), the
/// auth cookie, the `token` query parameter. At most one of each kind.
pub fn find_credentials(headers: &HeaderMap, query: Option<&str>, cookie_name: &str) -> Vec<Credential> {
    let mut found = Vec::with_capacity(3);
    let auth: Vec<&str> =
        headers.get_all(AUTHORIZATION).iter().filter_map(|v| v.to_str().ok()).map(str::trim).collect();
    let from_header = [("JWT", TokenSource::AuthorizationJwt), ("Bearer", TokenSource::AuthorizationBearer)]
        .into_iter()
        .find_map(|(scheme, source)| {
            auth.iter()
                .find_map(|v| strip_scheme(v, scheme))
                .map(|t| Credential { token: t.to_string(), source })
        })
        .or_else(|| {
            auth.iter()
                .find(|v| !v.is_empty())
                .map(|v| Credential { token: v.to_string(), source: TokenSource::AuthorizationOther })
        });
    found.extend(from_header);
    let cookie =
        headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
            |pair| {
                let (k, val) = pair.trim().split_once('=')?;
                (k == cookie_name && !val.is_empty())
                    .then(|| Credential { token: val.to_string(), source: TokenSource::Cookie })
            },
        );
    found.extend(cookie);
    found.extend(
        query
            .and_then(|q| query_param(q, "token"))
            .map(|token| Credential { token, source: TokenSource::Query }),
    );
    found
}

fn strip_scheme<'a>(v: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = v.split_once(' ')?;
    (s.eq_ignore_ascii_case(scheme) && !rest.trim().is_empty()).then(|| rest.trim())
}

/// Value of a query parameter, percent-decoded.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn find_credential(headers: &HeaderMap, query: Option<&str>, cookie_name: &str) -> Option<Credential> {
        find_credentials(headers, query, cookie_name).into_iter().next()
    }

    #[test]
    fn credential_order() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=b; payload-token=cookie.tok.en"));
        assert_eq!(
            find_credential(&h, Some("token=q.u.ery"), "payload-token").unwrap().source,
            TokenSource::Cookie
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer b.e.arer"));
        let c = find_credential(&h, None, "payload-token").unwrap();
        assert_eq!((c.token.as_str(), c.source), ("b.e.arer", TokenSource::AuthorizationBearer));
        h.append(AUTHORIZATION, HeaderValue::from_static("JWT j.w.t"));
        assert_eq!(find_credential(&h, None, "payload-token").unwrap().token, "j.w.t");
        let empty = HeaderMap::new();
        assert_eq!(
            find_credential(&empty, Some("x=1&token=a%2Eb.c"), "payload-token").unwrap().token,
            "a.b.c"
        );
        let mut api = HeaderMap::new();
        api.insert(AUTHORIZATION, HeaderValue::from_static("users API-Key abc"));
        let c = find_credential(&api, None, "payload-token").unwrap();
        assert!(!c.is_jwt());
        assert_eq!(c.token, "users API-Key abc");
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41+b"), "A b");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn claims_need_id_and_collection() {
        assert!(UserClaims::from_json(r#"{"id":1}"#).is_none());
        let c = UserClaims::from_json(r#"{"id":7,"collection":"users","sid":"s1","exp":99}"#).unwrap();
        assert_eq!((c.id.as_str(), c.id_json.as_str(), c.exp), ("7", "7", Some(99)));
        let c = UserClaims::from_json(r#"{"id":"abc","collection":"users"}"#).unwrap();
        assert_eq!(c.user_room(), "user:users:abc");
        assert_eq!(c.summary_json(), r#"{"id":"abc","collection":"users"}"#);
    }
}
