//! Whether the lab may still make things: once the signal cleanup begins, no process starts
//! and no namespace is made (either would outlive the sweep). A leaf: `proc` and `netns`
//! both ask it.

/// Set once the process is shutting down on a signal: no child starts after it.
static SPAWNING_STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Spawns under way (counted before the flag is looked at, so [`stop_spawning`] sees
/// every one that did not see the flag).
static SPAWNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// From now on no child process starts (the signal handler's cleanup is under way); returns
/// once the spawns already under way have finished (at most 5 s), so the cleanup finds them.
pub fn stop_spawning() {
    use std::sync::atomic::Ordering::SeqCst;
    SPAWNING_STOPPED.store(true, SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while SPAWNING.load(SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Holds one count in [`SPAWNING`] while a spawn (or a namespace's creation) is under way.
pub(crate) struct SpawnUnderWay;

impl SpawnUnderWay {
    /// None once the cleanup has begun: nothing new may be made then.
    pub(crate) fn begin() -> Option<SpawnUnderWay> {
        use std::sync::atomic::Ordering::SeqCst;
        SPAWNING.fetch_add(1, SeqCst);
        let guard = SpawnUnderWay;
        (!SPAWNING_STOPPED.load(SeqCst)).then_some(guard)
    }
}

impl Drop for SpawnUnderWay {
    fn drop(&mut self) {
        SPAWNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
