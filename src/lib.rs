//! napi bindings: convert types and forward to `realtime-core`; no logic lives here.
#![deny(clippy::all)]

use napi_derive::napi;

/// Version of the native core this addon was built from.
#[napi]
pub fn core_version() -> String {
    realtime_core::VERSION.to_string()
}
