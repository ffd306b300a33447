//! Concurrent follows (live tails and SSE streams) per token: beyond
//! `max_follows_per_token`, 429 with `Retry-After`. A [`FollowSlot`] is held for as long as
//! the stream lives (see [`hold`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;

use super::Caller;
use crate::api::error::ApiError;

/// Counts open follows by token name (`anonymous` for callers without a token).
#[derive(Debug)]
pub struct FollowLimiter {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open follow; dropping it frees the slot.
#[derive(Debug)]
pub struct FollowSlot {
    limiter: Arc<FollowLimiter>,
    key: String,
}

impl FollowLimiter {
    pub fn new(max: usize) -> Arc<FollowLimiter> {
        Arc::new(FollowLimiter {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `caller`, or the 429 answer when it has `max` follows open.
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<FollowSlot, ApiError> {
        let key = caller.name().to_owned();
        let mut open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return Err(ApiError::too_many(
                format!(
                    "this token already has {} follows open (max_follows_per_token); close one or retry later",
                    self.max
                ),
                5,
            ));
        }
        *n += 1;
        Ok(FollowSlot {
            limiter: self.clone(),
            key,
        })
    }
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        let mut open = match self.limiter.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// `resp` with `slot` held until its body is dropped (finished or disconnected).
pub fn hold(resp: Response, slot: FollowSlot) -> Response {
    let (parts, body) = resp.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
