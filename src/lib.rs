//! napi bindings of payload-realtime-rs: convert types and forward to `realtime-core`.
//! No logic lives here; the JS-facing manager (socket handles, handler normalization) is the
//! TypeScript in `ts/plugin/manager.ts`.
#![deny(clippy::all)]

mod hooks;
mod options;
mod server;

use napi_derive::napi;

pub use server::NativeServer;

/// Version of the native core this addon was built from.
#[napi]
pub fn core_version() -> String {
    realtime_core::VERSION.to_string()
}

/// Throws a JS `Error` whose `code` is `code`; the returned error tells napi it is pending.
pub(crate) fn throw(env: &napi::Env, code: &str, message: &str) -> napi::Error {
    let _ = env.throw_error(message, Some(code));
    napi::Error::new(napi::Status::PendingException, message.to_string())
}

/// A core error thrown as a JS `Error` with the core's stable `code`.
pub(crate) fn js_error(env: &napi::Env, e: realtime_core::CoreError) -> napi::Error {
    throw(env, e.code(), &e.to_string())
}
