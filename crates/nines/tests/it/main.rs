//! Process-level tests of nines members: real `nines server` processes on
//! loopback, driven by real clients (`etcdctl` and the `etcd-client` crate),
//! killed, paused and partitioned.

mod bad_input;
mod etcdctl;
mod failover;
mod kv_client;
mod partition;
mod playground;
mod run_elect;
mod snapshot;
mod support;
mod watch_lease;
