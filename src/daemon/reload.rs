//! [`Request::Reload`](super::Request::Reload) (SIGHUP): re-read the config and apply it to
//! the running daemon.
//!
//! Owns: which parts of a new config are refused (a moved store, an invalid file), and how
//! the images' slots carry over (same reference: state, schedule and pending update kept;
//! a changed interval is checked at once; with changed `signatures`, a digest refused for
//! its signature is verified again at once). The link's cap, windows and quota change in
//! place, so a running download goes on under the new limits. Never restarts a download.

use tokio::time::Instant;

use super::slot::Slot;
use super::{Daemon, DaemonError, rollout, setup};

impl Daemon {
    /// [`Request::Reload`]: re-read the config; keep the running one if the new one is refused.
    pub(super) async fn reload(&mut self) {
        self.notifier.reloading();
        tracing::info!(config = %self.cfg.path.display(), "reloading the config");
        match self.try_reload().await {
            Ok(()) => tracing::info!(images = self.slots.len(), "config reloaded"),
            Err(e) => tracing::error!(
                config = %self.cfg.path.display(),
                error = %crate::error_chain(&e),
                "config reload refused; still running with the previous config"
            ),
        }
        self.publish();
        self.files.flush().await;
        self.notifier.ready();
    }

    async fn try_reload(&mut self) -> Result<(), DaemonError> {
        let new = setup::load_config(self.cfg.path.clone()).await?;
        if new.store.path != self.cfg.store.path {
            return Err(DaemonError::StoreMoved {
                from: self.cfg.store.path.clone(),
                to: new.store.path,
            });
        }
        for note in &new.notes {
            tracing::warn!(config = %new.path.display(), "{note}");
        }
        let puller = setup::build_puller(&new, &self.store, &self.tracker, &self.cancel, &self.link).await?;
        self.link.reconfigure(&new.link).await;
        let now = Instant::now();
        // New keys (or none): a digest refused for its signature is verified again now.
        let keys_changed = new.signatures != self.cfg.signatures;
        let mut old: Vec<Slot> = std::mem::take(&mut self.slots);
        if keys_changed {
            for s in old.iter_mut().filter(|s| s.refused.is_some()) {
                tracing::info!(image_ref = %s.name, "signatures changed: the refused digest is verified again");
                s.refused = None;
                s.next_due = now;
            }
        }
        self.slots = new
            .images
            .iter()
            .map(
                |img| match old.iter().position(|s| s.image.reference == img.reference) {
                    Some(p) => {
                        let mut s = old.swap_remove(p);
                        if s.image.interval != img.interval {
                            s.next_due = now;
                        }
                        s.image = img.clone();
                        s
                    }
                    None => Slot::new(img.clone(), now),
                },
            )
            .collect();
        self.puller = puller;
        self.silences = setup::silences(&new);
        self.cfg = new;
        self.load_local_state().await;
        rollout::refresh_adopt_at(&mut self.slots, &self.cfg.rollout);
        for s in &self.slots {
            self.metrics.image(&s.name);
        }
        let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
        self.metrics.images.retain(|k, _| names.contains(k));
        Ok(())
    }
}
