//! Per-worker execution. With N worker threads the gateway runs N
//! single-threaded tokio runtimes instead of one work-stealing runtime: each
//! client connection, its requests and the upstream connections it opens
//! stay on one thread, and each worker has its own idle-connection pools, so
//! the request path has no cross-thread wake-ups and no contended locks.
//! Invariant: a socket is registered with the reactor of the worker that
//! polls it; the accept loops hand accepted sockets over as std sockets and
//! the serving worker registers them (`server::on_this_worker`).

use std::cell::Cell;
use std::sync::Arc;

use tokio::runtime::Handle;

/// Idle pools per backend; workers beyond this share pools.
pub const POOL_SLOTS: usize = 16;

thread_local! {
    static WORKER_ID: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (0 outside worker threads).
pub fn current() -> usize {
    WORKER_ID.with(Cell::get)
}

/// The worker runtimes that client connections are spread over.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    handles: Arc<[Handle]>,
}

impl Workers {
    /// No dedicated workers: connections run on the caller's runtime.
    pub fn inline() -> Workers {
        Workers::default()
    }

    /// Uses `main` as worker 0 and starts `count - 1` more threads, each with
    /// its own single-threaded runtime. The threads run for the life of the process.
    pub fn start(main: Handle, count: usize) -> std::io::Result<Workers> {
        let mut handles = vec![main];
        for id in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("nines-gw-{id}"))
                .spawn(move || {
                    WORKER_ID.with(|w| w.set(id));
                    runtime.block_on(std::future::pending::<()>());
                })?;
        }
        Ok(Workers {
            handles: handles.into(),
        })
    }

    /// Runs `task` on worker `index % count`, or on the current runtime when inline.
    pub fn spawn<F>(&self, index: usize, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(task);
        } else {
            self.handles[index % self.handles.len()].spawn(task);
        }
    }
}
