//! Saving a run after a transition, and what a conflict with another replica means.

use super::Slot;
use crate::error::ErrorKind;
use crate::store::RunStore;

/// What a save came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SaveOutcome {
    Done,
    /// Not saved (storage failed); the next transition or reconciliation tries again.
    Failed,
    /// Another replica owns the run now: it must be dropped here.
    Lost,
}

/// Saves a run, tracking failures so the next attempt saves it again. A conflict means
/// another engine changed the run: if that one owns it now, the run is lost to this one;
/// otherwise (a write of ours raced one of our own) ours is saved over it.
pub(super) async fn save(store: &dyn RunStore, slot: &mut Slot, replica: &str) -> SaveOutcome {
    match store.put_run(&slot.run, slot.version).await {
        Ok(v) => {
            slot.version = v;
            slot.dirty = false;
            SaveOutcome::Done
        }
        Err(e) if e.kind() == ErrorKind::Conflict => {
            match store.get_run(&slot.run.id).await {
                Ok(Some((stored, v))) => {
                    if stored.owner.as_deref() != Some(replica) {
                        tracing::info!(run = %slot.run.id, owner = stored.owner.as_deref().unwrap_or("-"), "flow run taken over by another replica; dropping it here");
                        return SaveOutcome::Lost;
                    }
                    tracing::warn!(run = %slot.run.id, error = %e, "run changed in the store under us; saving ours over it");
                    slot.version = v;
                }
                Ok(None) => slot.version = 0,
                Err(_) => {}
            }
            slot.dirty = true;
            SaveOutcome::Failed
        }
        Err(e) => {
            tracing::error!(run = %slot.run.id, error = %e, "cannot save run state; will retry");
            slot.dirty = true;
            SaveOutcome::Failed
        }
    }
}
