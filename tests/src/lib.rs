//! The enforcer's test lab: network namespaces that stand in for a host with containers, for
//! the privileged end-to-end tests in `tests/tests/` and for `cargo xtask lab`.
//!
//! ```no_run
//! use std::time::Duration;
//! use enforcer_tests::{Lab, tcp_echo};
//!
//! let lab = Lab::up_yaml("name: t\nworkloads: [{name: web}, {name: client}]\n").expect("lab");
//! lab.serve_echo("web", &[80]).expect("echo server");
//! assert!(tcp_echo(&lab, "client", lab.addr6("web"), 80, Duration::from_secs(2)));
//! // dropped: namespaces removed
//! ```

#[cfg(feature = "agent")]
pub mod agent;
pub mod lab;

pub use lab::netns::{NetnsError, in_netns, netns_exists};
pub use lab::spec::{ExternalSpec, LabSpec, PortSpec, Protocol, SpecError, WorkloadSpec};
pub use lab::state::{LabState, StateError};
pub use lab::status::{LabStatus, NamespaceStatus};
pub use lab::traffic::{ServeError, ping, tcp_connect, tcp_echo, udp_echo};
pub use lab::{Lab, LabChild, LabError, Node, NodeKind};
