//! Other clients' ways of naming the collections to join, accepted beside ours so their
//! clients work unchanged: `{"type":"join-collection","data":"posts"}`,
//! `{"type":"join-collection","data":["posts","users"]}` and the `subscribe` / `unsubscribe`
//! types of the uWebSockets.js Payload plugin.

use serde_json::value::RawValue;

use crate::protocol::{codes, Refused};

/// Most collections one message may name (a bound on hostile input).
pub(crate) const MAX_COLLECTIONS_PER_MESSAGE: usize = 64;

/// Our name for another client's message type (`subscribe` is `join-collection`).
pub(crate) fn canonical_type(kind: &str) -> &str {
    match kind {
        "subscribe" => "join-collection",
        "unsubscribe" => "leave-collection",
        other => other,
    }
}

/// The collection slugs of a join/leave: `collection`, else `data` as a string or an array of
/// strings. Refuses anything else (`bad_message`).
pub(crate) fn collection_slugs(
    kind: &str,
    collection: Option<&str>,
    data: Option<&RawValue>,
) -> Result<Vec<String>, Refused> {
    if let Some(c) = collection {
        return Ok(vec![c.to_string()]);
    }
    let bad = || Refused {
        code: codes::BAD_MESSAGE,
        message: format!("{kind} needs \"collection\" (or \"data\": a slug or an array of slugs)"),
    };
    let raw = data.ok_or_else(bad)?.get();
    if raw.starts_with('"') {
        return serde_json::from_str::<String>(raw).map(|s| vec![s]).map_err(|_| bad());
    }
    let list: Vec<String> = serde_json::from_str(raw).map_err(|_| bad())?;
    if list.is_empty() || list.len() > MAX_COLLECTIONS_PER_MESSAGE {
        return Err(Refused {
            code: codes::BAD_MESSAGE,
            message: format!("{kind} names 1 to {MAX_COLLECTIONS_PER_MESSAGE} collections"),
        });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slugs(collection: Option<&str>, data: Option<&str>) -> Result<Vec<String>, &'static str> {
        let raw = data.map(|d| RawValue::from_string(d.to_string()).unwrap());
        collection_slugs("join-collection", collection, raw.as_deref()).map_err(|r| r.code)
    }

    #[test]
    fn accepts_every_shape() {
        assert_eq!(slugs(Some("posts"), None).unwrap(), ["posts"]);
        assert_eq!(slugs(None, Some(r#""posts""#)).unwrap(), ["posts"]);
        assert_eq!(slugs(None, Some(r#"["posts","users"]"#)).unwrap(), ["posts", "users"]);
        assert_eq!(canonical_type("subscribe"), "join-collection");
        assert_eq!(canonical_type("unsubscribe"), "leave-collection");
    }

    #[test]
    fn refuses_other_shapes() {
        assert_eq!(slugs(None, None).unwrap_err(), codes::BAD_MESSAGE);
        assert_eq!(slugs(None, Some("7")).unwrap_err(), codes::BAD_MESSAGE);
        assert_eq!(slugs(None, Some("[]")).unwrap_err(), codes::BAD_MESSAGE);
        assert_eq!(slugs(None, Some(r#"["a",1]"#)).unwrap_err(), codes::BAD_MESSAGE);
        let many = format!("[{}]", vec!["\"a\""; 65].join(","));
        assert_eq!(slugs(None, Some(&many)).unwrap_err(), codes::BAD_MESSAGE);
    }
}
