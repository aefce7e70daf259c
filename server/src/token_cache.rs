//! Bearer tokens verified in the last moments, so that a burst of requests with one token (a
//! training loop logging metrics, a dashboard) costs one token lookup, not one per request.
//!
//! An entry lives [`TTL`] at most (never past the token's own expiry). Any committed change to a
//! token, an access token or a user (revocations, admin and auditor grants, offboarding) bumps
//! the process's generation (see [`credentials_changed`]), which drops every entry at once: a
//! revocation answered by this process takes effect on its next request. Another replica sharing
//! the database learns of it when its entries expire, within [`TTL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::actor::Actor;

/// How long a verified token is trusted without looking it up again.
pub const TTL: Duration = Duration::from_secs(2);

/// The most tokens remembered; past it the cache starts over (a flood of distinct tokens
/// cannot grow memory).
const CAPACITY: usize = 10_000;

/// The audit subjects whose changes may change who a token stands for, or whether it is valid.
pub const CREDENTIAL_SUBJECTS: &[&str] = &["token", "access_token", "user"];

static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Entry {
    actor: Actor,
    generation: u64,
    until: Instant,
}

static ENTRIES: LazyLock<Mutex<HashMap<[u8; 32], Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Drops every remembered token. Called when a change to credentials is about to commit and
/// again once it has: a lookup that raced the change (it read the token before the commit) was
/// made under the old generation and is never answered from the cache.
pub fn credentials_changed() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The actor a token stood for when last verified, if that is recent and nothing about
/// credentials has changed since.
pub fn get(token: &str) -> Option<Actor> {
    let entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    let entry = entries.get(&key(token))?;
    (entry.generation == GENERATION.load(Ordering::SeqCst) && Instant::now() < entry.until)
        .then(|| entry.actor.clone())
}

/// A lookup in progress: take it before reading the token from the database, so that a change
/// committed meanwhile makes what it read unusable.
pub struct Lookup {
    generation: u64,
}

impl Lookup {
    pub fn start() -> Lookup {
        Lookup {
            generation: GENERATION.load(Ordering::SeqCst),
        }
    }

    /// Remembers what the database said the token stands for, until `expires_at` at the latest.
    pub fn remember(self, token: &str, actor: &Actor, expires_at: DateTime<Utc>) {
        let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
        let mut entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            key(token),
            Entry {
                actor: actor.clone(),
                generation: self.generation,
                until: Instant::now() + TTL.min(left),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(email: &str) -> Actor {
        Actor {
            email: email.to_owned(),
            ..Actor::system("test")
        }
    }

    // One test: the generation is process-wide, so parallel tests would bump it under each other.
    #[test]
    fn remembers_until_credentials_change_or_expiry() {
        let later = Utc::now() + chrono::Duration::hours(1);
        let lookup = Lookup::start();
        lookup.remember("token-a", &actor("a@x"), later);
        assert_eq!(get("token-a").map(|a| a.email), Some("a@x".to_owned()));
        assert!(get("token-b").is_none());

        // A change to credentials drops what was remembered…
        credentials_changed();
        assert!(get("token-a").is_none());
        // …and what a lookup started before the change read is never answered.
        let raced = Lookup::start();
        credentials_changed();
        raced.remember("token-a", &actor("a@x"), later);
        assert!(get("token-a").is_none());

        // A token expiring sooner than the TTL is remembered only until it expires.
        Lookup::start().remember("token-c", &actor("c@x"), Utc::now());
        assert!(get("token-c").is_none());
    }
}
