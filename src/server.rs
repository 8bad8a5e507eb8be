//! `NativeServer`: the core's `ServerHandle` as a JS class, plus setters for the JS hooks.

use std::sync::Arc;

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Either, Function, Object, Promise};
use napi::Env;
use napi_derive::napi;
use realtime_core::{Event, Message, Operation, Server, ServerConfig, ServerHandle};

use crate::batch::{BatchArgs, BatchReturn};
use crate::hooks::{Args2, AuthorizeArgs, BinaryArgs, CloseArgs, JsHooks, Notify, Tsfn, QUEUE};
use crate::options::NativeOptions;
use crate::{js_error, throw};

use napi::Result;

fn message(payload: &Either<String, Buffer>) -> Message {
    match payload {
        Either::A(s) => Message::text(s.as_bytes()),
        Either::B(b) => Message::binary(b),
    }
}

/// A close code an app may send (1000, 1008, 3000-4999), never truncated into another one.
fn app_code(env: &Env, code: Option<u32>) -> Result<Option<u16>> {
    match code {
        None => Ok(None),
        Some(c) => match u16::try_from(c) {
            Ok(c) if realtime_core::protocol::app_close_code(c) => Ok(Some(c)),
            _ => Err(throw(env, "ECONFIG", "close code must be 1000, 1008 or 3000-4999")),
        },
    }
}

/// A socket as JS sees it.
#[napi(object)]
pub struct SocketInfo {
    pub id: String,
    /// The user's claims as JSON text, or null.
    pub user: Option<String>,
    pub url: String,
    pub rooms: Vec<String>,
    pub remote_address: String,
    /// Milliseconds since the Unix epoch.
    pub connected_at: f64,
}

/// A room member, as reported by `roomMembers`.
#[napi(object)]
pub struct MemberInfo {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub user_collection: Option<String>,
    pub instance: String,
}

/// Members of a room on every instance, and whether the list is partial (backplane outage).
#[napi(object)]
pub struct RoomMembersInfo {
    pub members: Vec<MemberInfo>,
    pub partial: bool,
}

fn member_info(m: realtime_core::Member) -> MemberInfo {
    MemberInfo {
        socket_id: m.socket_id,
        user_id: m.user_id,
        user_collection: m.user_collection,
        instance: m.instance,
    }
}

/// A running realtime server (Rust core on its own tokio runtime).
#[napi]
pub struct NativeServer {
    /// After `holdFanOut()` a holding handle: its fan-out calls (`emitEvent`, `broadcast`,
    /// `send`, `socketBroadcast`) wait for `flush()`; nothing else it does changes.
    handle: ServerHandle,
    hooks: Arc<JsHooks>,
}

/// Turns a JS function into a weak, bounded ThreadsafeFunction.
fn tsfn<A, R>(f: Function<A, Promise<R>>) -> Result<Arc<Tsfn<A, R>>>
where
    A: 'static + napi::bindgen_prelude::JsValuesTupleIntoVec,
    R: 'static + napi::bindgen_prelude::FromNapiValue,
{
    let t = f
        .build_threadsafe_function::<A>()
        .weak::<true>()
        .callee_handled::<false>()
        .max_queue_size::<QUEUE>()
        .build()?;
    Ok(Arc::new(t))
}

#[napi]
impl NativeServer {
    /// Binds and starts the server; throws (code EADDR, ECONFIG, …) if it cannot.
    #[napi(factory)]
    pub fn start(env: Env, options: Option<NativeOptions>) -> Result<Self> {
        let config = ServerConfig::try_from(options.unwrap_or_default())
            .map_err(|e| js_error(&env, realtime_core::CoreError::Config(e)))?;
        let hooks = Arc::new(JsHooks::default());
        let handle = Server::start(config, hooks.clone()).map_err(|e| js_error(&env, e))?;
        Ok(Self { handle, hooks })
    }

    /// The bound port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.handle.port())
    }

    /// The port of `/healthz` and `/metrics` when `monitoring` gave them their own address.
    #[napi(getter)]
    pub fn monitoring_port(&self) -> Option<u32> {
        self.handle.monitoring_port().map(u32::from)
    }

    /// This instance's id (prefix of its socket ids).
    #[napi(getter)]
    pub fn instance_id(&self) -> String {
        self.handle.instance_id().to_string()
    }

    /// Sends `{type, operation, collection, id, doc}` to `collection:<slug>`, `doc:<slug>:<id>`
    /// and `extraRooms`; `idJson` and `docJson` are JSON text. False: queued, but the fan-out
    /// queue is over half full (await `drained()`); throws EBUSY when full, EMSGSIZE when larger
    /// than `maxBackpressure`.
    #[napi]
    pub fn emit_event(
        &self,
        env: &Env,
        collection: String,
        id_json: String,
        operation: String,
        doc_json: Either<String, Buffer>,
        extra_rooms: Option<Vec<String>>,
    ) -> Result<bool> {
        let operation = Operation::parse(&operation)
            .ok_or_else(|| throw(env, "EINVAL", "operation must be create, update or delete"))?;
        let doc_json = match doc_json {
            Either::A(s) => Bytes::from(s),
            Either::B(b) => Bytes::copy_from_slice(&b),
        };
        let event =
            Event { collection, id_json, operation, doc_json, extra_rooms: extra_rooms.unwrap_or_default() };
        self.handle.emit_event(event).map_err(|e| js_error(env, e))
    }

    /// Sends to every socket in `room` but `except` (`"*"`: every socket on every instance); a
    /// string goes as text, a Buffer as binary. The return value is `emitEvent`'s.
    #[napi]
    pub fn broadcast(
        &self,
        env: &Env,
        room: String,
        payload: Either<String, Buffer>,
        except: Option<String>,
    ) -> Result<bool> {
        self.handle.broadcast(&room, &message(&payload), except.as_deref()).map_err(|e| js_error(env, e))
    }

    /// From now on the fan-out calls (`emitEvent`, `broadcast`, `send`, `socketBroadcast`) are
    /// checked and counted at once but sent on only by `flush()`, in order: the caller flushes at
    /// the end of its JS task (a microtask), so a burst of calls reaches the fan-out as one pass.
    #[napi]
    pub fn hold_fan_out(&mut self) {
        self.handle = self.handle.holding();
    }

    /// Sends the fan-out calls held since the last flush on (see `holdFanOut`).
    #[napi]
    pub fn flush(&self) {
        self.handle.flush();
    }

    /// Sends to one socket; false if it is not open here.
    #[napi]
    pub fn send(&self, env: &Env, socket_id: String, payload: Either<String, Buffer>) -> Result<bool> {
        self.handle.send(&socket_id, &message(&payload)).map_err(|e| js_error(env, e))
    }

    /// Puts a socket in a room (full name); false if it was already in it.
    #[napi]
    pub fn join(&self, env: &Env, socket_id: String, room: String) -> Result<bool> {
        let s = self
            .handle
            .socket(&socket_id)
            .ok_or_else(|| js_error(env, realtime_core::CoreError::NoSuchSocket(socket_id)))?;
        s.join(&room).map_err(|e| js_error(env, e))
    }

    /// Takes a socket out of a room; false if it was not in it.
    #[napi]
    pub fn leave(&self, socket_id: String, room: String) -> bool {
        self.handle.socket(&socket_id).is_some_and(|s| s.leave(&room))
    }

    /// Sends to everyone in `room` but the socket `socketId`.
    #[napi]
    pub fn socket_broadcast(
        &self,
        env: &Env,
        socket_id: String,
        room: String,
        payload: Either<String, Buffer>,
    ) -> Result<bool> {
        self.handle.broadcast(&room, &message(&payload), Some(&socket_id)).map_err(|e| js_error(env, e))
    }

    /// Resolves once the fan-out queue is back under a quarter of its bounds.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn drained<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred::<(), _>()?;
        self.handle.drained_with(move || deferred.resolve(|_| Ok(())));
        Ok(promise)
    }

    /// Closes a socket after its queue flushes; false if it is not open here. `code`: 1000, 1008 or
    /// 3000-4999 (ECONFIG otherwise).
    #[napi]
    pub fn close_socket(
        &self,
        env: &Env,
        socket_id: String,
        code: Option<u32>,
        reason: Option<String>,
    ) -> Result<bool> {
        let code = app_code(env, code)?;
        Ok(match self.handle.socket(&socket_id) {
            Some(s) => {
                s.close(code.unwrap_or(1000), reason.as_deref().unwrap_or(""));
                true
            }
            None => false,
        })
    }

    /// A socket's state, or null if it is not open here.
    #[napi]
    pub fn socket_info(&self, socket_id: String) -> Option<SocketInfo> {
        let s = self.handle.socket(&socket_id)?;
        let connected_at =
            s.connected_at().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64);
        Some(SocketInfo {
            id: s.id().to_string(),
            user: s.user().map(|u| u.raw.to_string()),
            url: s.url().to_string(),
            rooms: s.rooms(),
            remote_address: s.remote().ip().to_string(),
            connected_at,
        })
    }

    /// Every counter (see README "Stats").
    #[napi(ts_return_type = "Record<string, any>")]
    pub fn stats(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self.handle.stats()).map_err(|e| napi::Error::from_reason(e.to_string()))
    }

    /// Ids of every socket open on this instance.
    #[napi]
    pub fn socket_ids(&self) -> Vec<String> {
        self.handle.socket_ids()
    }

    /// Members of `room` on this instance.
    #[napi]
    pub fn room_members(&self, room: String) -> Vec<MemberInfo> {
        self.handle.room_members(&room).into_iter().map(member_info).collect()
    }

    /// Members of `room` on every instance (through Redis when configured); `partial`: Redis
    /// could not be read, so these are this instance's members only.
    #[napi(ts_return_type = "Promise<RoomMembersInfo>")]
    pub fn room_members_everywhere<'env>(&self, env: &'env Env, room: String) -> Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred::<RoomMembersInfo, _>()?;
        self.handle.room_members_with(&room, move |members, partial| {
            deferred.resolve(move |_| {
                Ok(RoomMembersInfo { members: members.into_iter().map(member_info).collect(), partial })
            })
        });
        Ok(promise)
    }

    /// Closes every socket of a user (default code 4001); returns how many.
    #[napi]
    pub fn disconnect_user(
        &self,
        env: &Env,
        user_id: String,
        collection: Option<String>,
        code: Option<u32>,
    ) -> Result<u32> {
        let code = app_code(env, code)?;
        Ok(self.handle.disconnect_user(&user_id, collection.as_deref(), code) as u32)
    }

    /// Closes every socket of a session id (default code 4001); returns how many.
    #[napi]
    pub fn disconnect_session(&self, env: &Env, sid: String, code: Option<u32>) -> Result<u32> {
        let code = app_code(env, code)?;
        Ok(self.handle.disconnect_session(&sid, code) as u32)
    }

    /// Installs the custom-message hook and the types it handles (others get `unknown_type`).
    #[napi]
    pub fn set_message_handler(
        &self,
        types: Vec<String>,
        #[napi(ts_arg_type = "((batch: string) => Array<string | Promise<string>>) | null | undefined")]
        handler: Option<Function<BatchArgs, BatchReturn>>,
    ) -> Result<()> {
        let queue = self.hooks.batch.clone();
        *self.hooks.message.write() =
            handler.map(|f| crate::batch::build(f, queue)).transpose()?.map(Arc::new);
        *self.hooks.handler_types.write() = types.into_iter().collect();
        Ok(())
    }

    /// Installs the binary-message hook.
    #[napi]
    pub fn set_binary_handler(
        &self,
        #[napi(ts_arg_type = "((socketId: string, data: Buffer) => Promise<string>) | null | undefined")]
        handler: Option<Function<BinaryArgs, Promise<String>>>,
    ) -> Result<()> {
        *self.hooks.binary.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the upgrade verify hook.
    #[napi]
    pub fn set_verify_client(&self, handler: Option<Function<String, Promise<bool>>>) -> Result<()> {
        *self.hooks.verify.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the resolver for credentials that are not JWTs.
    #[napi]
    pub fn set_credential_resolver(&self, handler: Option<Function<String, Promise<String>>>) -> Result<()> {
        *self.hooks.resolve.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the session check asked after a JWT verifies (upgrade and `auth` messages).
    #[napi]
    pub fn set_session_validator(
        &self,
        #[napi(ts_arg_type = "((claimsJson: string) => Promise<boolean>) | null | undefined")]
        handler: Option<Function<String, Promise<bool>>>,
    ) -> Result<()> {
        *self.hooks.session.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the per-connection hook (middleware).
    #[napi]
    pub fn set_open_handler(
        &self,
        #[napi(
            ts_arg_type = "((socketId: string, upgradeJson: string) => Promise<boolean>) | null | undefined"
        )]
        handler: Option<Function<Args2, Promise<bool>>>,
    ) -> Result<()> {
        *self.hooks.open.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the `join-room` policy callback.
    #[napi]
    pub fn set_room_policy(
        &self,
        #[napi(ts_arg_type = "((userJson: string, room: string) => Promise<boolean>) | null | undefined")]
        handler: Option<Function<Args2, Promise<bool>>>,
    ) -> Result<()> {
        *self.hooks.can_join.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the check of `join-collection` (room `collection:<slug>`) and `join-doc` (room
    /// `doc:<slug>:<id>`); `false` answers error `forbidden`. None: every such join is allowed.
    #[napi]
    pub fn set_subscribe_policy(
        &self,
        #[napi(ts_arg_type = "((userJson: string, room: string) => Promise<boolean>) | null | undefined")]
        handler: Option<Function<Args2, Promise<bool>>>,
    ) -> Result<()> {
        *self.hooks.subscribe.write() = handler.map(tsfn).transpose()?;
        Ok(())
    }

    /// Installs the batched authorize hook and the collections that use it. `usersJson` is ""
    /// when the list is the one of the previous call, which had the same `usersId`. The answer
    /// has one verdict per user: 0 withholds the event, 1 sends it as emitted, k ≥ 2 sends it
    /// with `docs[k - 2]` (JSON text) as its doc.
    #[napi]
    pub fn set_authorize(
        &self,
        collections: Vec<String>,
        #[napi(
            ts_arg_type = "((collection: string, usersJson: string, eventJson: string, usersId: number) => Promise<AuthorizeAnswer>) | null | undefined"
        )]
        handler: Option<Function<AuthorizeArgs, Promise<crate::hooks::AuthorizeAnswer>>>,
    ) -> Result<()> {
        *self.hooks.authorize.write() = handler.map(tsfn).transpose()?;
        self.hooks.authorize_sent.store(0, std::sync::atomic::Ordering::Relaxed);
        *self.hooks.authorize_collections.write() = collections.into_iter().collect();
        Ok(())
    }

    /// Installs the socket-closed notification (socket id, close code, reason).
    #[napi]
    pub fn set_close_handler(
        &self,
        #[napi(
            ts_arg_type = "((socketId: string, code: number, reason: string) => void) | null | undefined"
        )]
        handler: Option<Function<CloseArgs, ()>>,
    ) -> Result<()> {
        let t: Option<Notify<CloseArgs>> = handler
            .map(|f| {
                f.build_threadsafe_function::<CloseArgs>()
                    .weak::<true>()
                    .callee_handled::<false>()
                    .max_queue_size::<QUEUE>()
                    .build()
            })
            .transpose()?;
        *self.hooks.close.write() = t.map(Arc::new);
        Ok(())
    }

    /// Graceful shutdown; resolves when every socket is closed.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred::<(), _>()?;
        self.handle.close_with(move || deferred.resolve(|_| Ok(())));
        Ok(promise)
    }
}
