//! Jobs of containers that went away while antilog was down.
//!
//! A restarted agent learns from its checkpoint (with what the spool still holds applied)
//! which containers it was following. One that no longer exists (`docker rm`, a `--rm`
//! container that ended, a Pod deleted with its log directory) and whose last run's exit
//! was never delivered would stay "running" for ever: nothing is left to tell how it
//! ended. Its job is closed instead: an exit with the code unknown (`null`) and a reason
//! saying why, after `logs_unavailable` saying that lines it printed after the last one
//! read are lost (if it printed any: nothing is left to count them), then its checkpoint
//! entry goes. The entry stays until that is acknowledged, so an agent stopped in between
//! closes the job at its next start (logarithmd records one exit per run).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use protocol::{now_ns, ContainerExit};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::checkpoint::{CheckpointStore, Entry};
use crate::metrics::Metrics;
use crate::pipeline::send::send;
use crate::pipeline::{Item, ItemKind};

/// The entries of `resume` whose containers are not in `existing` and whose latest run's
/// exit was never delivered, by container id.
pub fn unclosed(
    resume: &BTreeMap<String, Entry>,
    existing: &HashSet<String>,
) -> Vec<(String, Entry)> {
    resume
        .iter()
        .filter(|(id, e)| e.exit.is_none() && !existing.contains(*id))
        .map(|(id, e)| (id.clone(), *e))
        .collect()
}

/// At start: the checkpoint forgets the containers not in `existing`, except those whose
/// jobs must be closed first ([`unclosed`] of `resume`), which are returned for [`close`].
pub fn retain_existing(
    store: &CheckpointStore,
    resume: &BTreeMap<String, Entry>,
    existing: &HashSet<String>,
) -> Vec<(String, Entry)> {
    let gone = unclosed(resume, existing);
    let mut keep = existing.clone();
    keep.extend(gone.iter().map(|(id, _)| id.clone()));
    store.retain_existing(&keep);
    gone
}

/// The job's reason: the exit code is unknown because `what` was removed.
pub fn reason(what: &str) -> String {
    format!("exit code unknown: {what} was removed while antilog was down")
}

/// The job's `logs_unavailable`: lines after `seq` (the last one read) are lost, if any.
pub fn lines_lost(what: &str, seq: u64) -> String {
    format!(
        "{what} was removed while antilog was down: lines printed after the last one read \
         (seq {seq}), if any, are lost"
    )
}

/// Closes the jobs of `gone` (see the module's doc); `what` names the thing that went
/// ("the container", "the Pod's log directory"). False when the pipeline closed or
/// shutdown came first: the rest are closed at the next start.
pub async fn close(
    gone: Vec<(String, Entry)>,
    what: &str,
    tx: &mpsc::Sender<Item>,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> bool {
    for (id, entry) in gone {
        warn!(
            container_id = %id,
            last_seq = entry.pos.seq,
            restart_count = entry.restart_count,
            "{what} was removed while antilog was down: closing its job, exit code unknown"
        );
        let id: Arc<str> = id.into();
        let exit = ContainerExit {
            exit_code: None,
            finished_at: now_ns(),
            last_seq: entry.pos.seq,
            restart_count: entry.restart_count,
            reason: Some(reason(what)),
        };
        let items = [
            ItemKind::Unavailable(lines_lost(what, entry.pos.seq)),
            ItemKind::Exit(exit),
            ItemKind::Forget,
        ];
        for kind in items {
            if !send(tx, shutdown, metrics, &id, kind).await {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{ExitMark, Position};

    #[test]
    fn only_gone_containers_without_a_delivered_exit_are_closed() {
        let at = |seq| Position {
            seq,
            ts: 1,
            at_ts: 1,
            file: None,
        };
        let open = |seq, restart_count| Entry {
            pos: at(seq),
            exit: None,
            restart_count,
        };
        let closed = Entry {
            pos: at(4),
            exit: Some(ExitMark {
                restart_count: 0,
                finished_at: 5,
            }),
            restart_count: 0,
        };
        let resume = BTreeMap::from([
            ("running".to_string(), open(3, 0)),
            ("gone".to_string(), open(7, 2)),
            ("gone-closed".to_string(), closed),
        ]);
        let existing = HashSet::from(["running".to_string()]);
        assert_eq!(
            unclosed(&resume, &existing),
            vec![("gone".to_string(), open(7, 2))]
        );
    }

    #[tokio::test]
    async fn a_gone_container_gets_lost_lines_an_unknown_exit_and_forget() {
        let (tx, mut rx) = mpsc::channel(8);
        let entry = Entry {
            pos: Position {
                seq: 7,
                ts: 1,
                at_ts: 1,
                file: None,
            },
            exit: None,
            restart_count: 2,
        };
        let metrics = Arc::new(Metrics::new());
        let done = close(
            vec![("c1".to_string(), entry)],
            "the container",
            &tx,
            &CancellationToken::new(),
            &metrics,
        )
        .await;
        assert!(done);
        drop(tx);
        let mut kinds = Vec::new();
        while let Some(item) = rx.recv().await {
            assert_eq!(&*item.container_id, "c1");
            kinds.push(item.kind);
        }
        assert_eq!(kinds.len(), 3);
        assert!(
            matches!(&kinds[0], ItemKind::Unavailable(r) if r == &lines_lost("the container", 7) && r.contains("(seq 7)"))
        );
        match &kinds[1] {
            ItemKind::Exit(e) => {
                assert_eq!(e.exit_code, None);
                assert_eq!((e.last_seq, e.restart_count), (7, 2));
                assert_eq!(
                    e.reason.as_deref(),
                    Some("exit code unknown: the container was removed while antilog was down")
                );
            }
            other => panic!("expected the exit, got {other:?}"),
        }
        assert!(matches!(kinds[2], ItemKind::Forget));
    }
}
