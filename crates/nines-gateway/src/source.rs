//! Where a cluster's backends come from. [`BackendSource`] is the seam for
//! the registry: anything that can publish a list of [`BackendSpec`] on a
//! watch channel can feed a cluster. [`StaticSource`] is the config's own list.

use std::net::SocketAddr;

use tokio::sync::watch;

/// One backend as a source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Address of the backend.
    pub addr: SocketAddr,
    /// Relative weight (>= 1).
    pub weight: u32,
}

/// A changing list of backends; the cluster follows every published list.
pub trait BackendSource: Send + Sync {
    /// A receiver whose current value is the latest list.
    fn subscribe(&self) -> watch::Receiver<Vec<BackendSpec>>;
}

/// Resolves `service = "NAME"` clusters to a source (the registry, later).
pub trait ServiceResolver: Send + Sync {
    /// The source following service `name`, or `None` if it is unknown.
    fn resolve(&self, name: &str) -> Option<Box<dyn BackendSource>>;
}

/// A fixed list, possibly replaced by hand (e.g. by tests).
#[derive(Debug)]
pub struct StaticSource {
    sender: watch::Sender<Vec<BackendSpec>>,
}

impl StaticSource {
    /// A source publishing `backends`.
    pub fn new(backends: Vec<BackendSpec>) -> StaticSource {
        StaticSource {
            sender: watch::Sender::new(backends),
        }
    }

    /// Publishes a new list to every subscriber.
    pub fn replace(&self, backends: Vec<BackendSpec>) {
        self.sender.send_replace(backends);
    }
}

impl BackendSource for StaticSource {
    fn subscribe(&self) -> watch::Receiver<Vec<BackendSpec>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_replacements() {
        let spec = |port| BackendSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
        };
        let source = StaticSource::new(vec![spec(1)]);
        let mut receiver = source.subscribe();
        assert_eq!(*receiver.borrow_and_update(), vec![spec(1)]);
        source.replace(vec![spec(2), spec(3)]);
        assert!(receiver.has_changed().expect("sender alive"));
        assert_eq!(receiver.borrow().len(), 2);
    }
}
