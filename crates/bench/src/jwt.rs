//! HS256 tokens with Payload's claims (id, collection, email, exp), one per bench user.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::client::Result;

#[derive(Serialize)]
struct Claims<'a> {
    id: String,
    collection: &'a str,
    email: String,
    exp: u64,
}

/// A token for user `user` (id is its decimal string), valid for an hour.
pub fn mint(key: &str, user: usize) -> Result<String> {
    let claims = Claims {
        id: user.to_string(),
        collection: "users",
        email: format!("u{user}@bench.local"),
        exp: crate::scenarios::now_us() / 1_000_000 + 3600,
    };
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key.as_bytes()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn round_trip() {
        let t = mint("k", 7).unwrap();
        let v = decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"k"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(v.claims["id"], "7");
        assert_eq!(v.claims["collection"], "users");
        assert_eq!(v.claims["email"], "u7@bench.local");
        assert!(decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"x"),
            &Validation::new(Algorithm::HS256)
        )
        .is_err());
    }
}
